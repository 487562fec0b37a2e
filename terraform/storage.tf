# The object stores behind Sluice's tiers (docs/storage-tiers.md): hot (uploads, renditions,
# segments served to viewers), warm and cold (archive). Sluice records every copy of every
# object in its database and moves, restores and expires objects itself with its own
# lifecycle rules, so these buckets carry NO lifecycle rule that transitions or deletes
# objects: such a rule would leave Sluice's metadata pointing at objects that are gone (or
# unreadable in an archive class). The only bucket rule is aborting incomplete multipart
# uploads (tus uploads stream into multipart uploads; an abandoned one Sluice failed to
# abort would otherwise bill its parts forever). Storage classes are chosen by Sluice per
# write (`storage_class` of each store), not by the bucket.

locals {
  stores = {
    hot = {
      # Deleted from on every tier move, rendition re-run and expiry: versioning would
      # keep every deleted object billed (no lifecycle rule may expire old versions).
      versioned     = false
      storage_class = null
    }
    warm = {
      versioned     = false
      storage_class = var.warm_storage_class
    }
    cold = {
      # The archive often holds an asset's only copy and is rarely deleted from (only by
      # lifecycle expiry): versioning protects it from an accidental or malicious delete.
      versioned     = true
      storage_class = var.cold_storage_class
    }
  }
}

resource "aws_s3_bucket" "store" {
  for_each = local.stores
  bucket   = "${var.name}-${each.key}-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_public_access_block" "store" {
  for_each                = local.stores
  bucket                  = aws_s3_bucket.store[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "store" {
  for_each = local.stores
  bucket   = aws_s3_bucket.store[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "store" {
  for_each = local.stores
  bucket   = aws_s3_bucket.store[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    # S3 Bucket Keys: one KMS call per bucket key instead of per object (many small
    # segments would otherwise make KMS requests a real cost).
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "store" {
  for_each = local.stores
  bucket   = aws_s3_bucket.store[each.key].id
  versioning_configuration {
    # Disabled: never turned on (Suspended would still write null versions).
    status = local.stores[each.key].versioned ? "Enabled" : "Disabled"
  }
}

# Only this rule, on purpose (see the top of this file): no transition, no expiration.
resource "aws_s3_bucket_lifecycle_configuration" "store" {
  for_each = local.stores
  bucket   = aws_s3_bucket.store[each.key].id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_after_days
    }
  }
}

resource "aws_s3_bucket_logging" "store" {
  for_each      = local.stores
  bucket        = aws_s3_bucket.store[each.key].id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/${each.key}/"
}

# Only TLS, only the Sluice roles' own requests.
data "aws_iam_policy_document" "store_bucket" {
  for_each = local.stores
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.store[each.key].arn, "${aws_s3_bucket.store[each.key].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "store" {
  for_each   = local.stores
  bucket     = aws_s3_bucket.store[each.key].id
  policy     = data.aws_iam_policy_document.store_bucket[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.store]
}

# --- access logs: CloudFront standard logs, the load balancer's logs, S3 server access logs ---
# SSE-S3, not KMS: the load balancer's log delivery writes only to SSE-S3 buckets, and
# CloudFront's legacy log delivery needs ACLs (BucketOwnerPreferred) on its target.

resource "aws_s3_bucket" "logs" {
  bucket = "${var.name}-logs-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerPreferred"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

# Logs are not Sluice's objects: they expire here.
resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_elb_service_account" "current" {}

data "aws_iam_policy_document" "logs_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  statement {
    sid       = "LoadBalancerLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }
  # Regions opened after August 2022 deliver load balancer logs through this principal.
  statement {
    sid       = "LoadBalancerLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/s3/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket     = aws_s3_bucket.logs.id
  policy     = data.aws_iam_policy_document.logs_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.logs]
}
