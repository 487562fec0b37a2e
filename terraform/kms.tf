# One customer-managed key for the data at rest: the store buckets, the database, Redis,
# the secrets and the CloudWatch logs. Rotated yearly by KMS.

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
}

resource "aws_kms_key" "data" {
  description             = "${var.name}: stores, database, Redis, secrets, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # In a key policy "Resource": "*" means this key.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account administers the key through IAM (AWS's default key policy).
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = local.account_root }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # CloudWatch Logs encrypts this deployment's log groups with it.
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/${var.name}/*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}
