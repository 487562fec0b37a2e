# CloudFront in front of the gateways' load balancer (docs/delivery.md, cdn/src/):
# - /v1/play/* (segments, thumbnails, player files, watch pages): cached by path, the
#   origin's Cache-Control honoured (segments and VOD playlists `max-age=31536000,
#   immutable`, watch pages 300 s), viewers admitted by a CloudFront signature (signed
#   cookies / URL from [cdn.cloudfront], trusted key group below) before the cache.
# - /v1/play/*.m3u8 (playlists): the same, but with a one-second default so a live
#   playlist (`max-age=⌊T/2⌋, stale-while-revalidate=T`) is never kept longer than Sluice
#   says, and compressed (gzip, brotli).
# - everything else (the API, tus uploads, live pushes, health): never cached, every method.
# Sluice's own token is a path segment, so the path is the whole cache key; CloudFront
# entries are per token (docs/operations.md, CloudFront).

resource "aws_cloudfront_public_key" "sluice" {
  name        = "${var.name}-signing"
  comment     = "Public half of the key Sluice signs CloudFront URLs and cookies with"
  encoded_key = tls_private_key.cloudfront.public_key_pem
}

resource "aws_cloudfront_key_group" "sluice" {
  name    = "${var.name}-viewers"
  comment = "Keys whose signatures admit viewers to /v1/play/*"
  items   = [aws_cloudfront_public_key.sluice.id]
}

# The load balancer forwards only requests carrying this header (compute.tf): nobody can
# bypass CloudFront (its signature check and WAF) by calling the origin directly.
resource "random_password" "origin_verify" {
  length  = 48
  special = false
}

resource "aws_cloudfront_cache_policy" "segments" {
  name        = "${var.name}-segments"
  comment     = "Sluice playback objects: the origin's Cache-Control, path-only key"
  min_ttl     = 0
  default_ttl = 86400
  max_ttl     = 31536000
  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = true
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "playlists" {
  name        = "${var.name}-playlists"
  comment     = "Sluice playlists: the origin's Cache-Control (live: half a target duration), 1 s when absent"
  min_ttl     = 0
  default_ttl = 1
  max_ttl     = 31536000
  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = true
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

# AWS managed policies: CachingDisabled, and every viewer header, cookie and query string
# except Host (the API and uploads see what the client sent; URLs come from public_url).
locals {
  caching_disabled_policy_id        = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
  all_viewer_except_host_request_id = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
}

resource "aws_cloudfront_response_headers_policy" "sluice" {
  name    = "${var.name}-security"
  comment = "HSTS and nosniff on every answer; CORS stays Sluice's"
  security_headers_config {
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      # Eligibility for browsers' preload lists; nothing is preloaded until the domain's
      # owner submits it.
      preload  = true
      override = true
    }
    content_type_options {
      override = true
    }
    referrer_policy {
      referrer_policy = "strict-origin-when-cross-origin"
      override        = false
    }
  }
}

resource "aws_cloudfront_distribution" "sluice" {
  enabled         = true
  is_ipv6_enabled = true
  comment         = "Sluice ${var.name}"
  aliases         = [var.cdn_domain_name]
  price_class     = var.cloudfront_price_class
  http_version    = "http2and3"
  web_acl_id      = var.enable_waf ? aws_wafv2_web_acl.cdn[0].arn : null

  origin {
    origin_id   = "gateways"
    domain_name = var.origin_domain_name

    custom_origin_config {
      http_port                = 80
      https_port               = 443
      origin_protocol_policy   = "https-only"
      origin_ssl_protocols     = ["TLSv1.2"]
      origin_read_timeout      = 60
      origin_keepalive_timeout = 60
    }

    custom_header {
      name  = "X-Sluice-Origin-Verify"
      value = random_password.origin_verify.result
    }

    # One regional cache in front of the load balancer: edges miss into it, not into
    # the gateways (a new segment asked by every edge reaches the origin once).
    origin_shield {
      enabled              = true
      origin_shield_region = var.origin_shield_region
    }
  }

  # The API, uploads (tus: PATCH, HEAD, OPTIONS), live pushes: never cached.
  default_cache_behavior {
    target_origin_id           = "gateways"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = local.caching_disabled_policy_id
    origin_request_policy_id   = local.all_viewer_except_host_request_id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.sluice.id
    compress                   = true
  }

  ordered_cache_behavior {
    path_pattern               = "/v1/play/*.m3u8"
    target_origin_id           = "gateways"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = aws_cloudfront_cache_policy.playlists.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.sluice.id
    trusted_key_groups         = [aws_cloudfront_key_group.sluice.id]
    compress                   = true
  }

  ordered_cache_behavior {
    path_pattern               = "/v1/play/*"
    target_origin_id           = "gateways"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = aws_cloudfront_cache_policy.segments.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.sluice.id
    trusted_key_groups         = [aws_cloudfront_key_group.sluice.id]
    # Segments are never compressed by Sluice (docs/delivery.md); watch pages and player
    # files are.
    compress = true
  }

  logging_config {
    bucket          = aws_s3_bucket.logs.bucket_domain_name
    prefix          = "cloudfront/"
    include_cookies = false
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = var.cdn_certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }

  depends_on = [aws_s3_bucket_ownership_controls.logs]
}

# --- optional WAF (var.enable_waf) ---

resource "aws_wafv2_web_acl" "cdn" {
  count    = var.enable_waf ? 1 : 0
  provider = aws.us_east_1
  name     = "${var.name}-cdn"
  scope    = "CLOUDFRONT"

  default_action {
    allow {}
  }

  rule {
    name     = "per-ip-rate"
    priority = 0
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit_per_5min
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-per-ip-rate"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common"
    priority = 1
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # Upload bodies (tus PATCH, raw POST) are video, far above the 8 KB body rule.
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-aws-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 2
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-aws-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-cdn"
    sampled_requests_enabled   = true
  }
}

resource "aws_cloudwatch_log_group" "waf" {
  count             = var.enable_waf ? 1 : 0
  provider          = aws.us_east_1
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.waf_logs[0].arn
}

# WAF logs of a CloudFront web ACL live in us-east-1, so their key does too.
resource "aws_kms_key" "waf_logs" {
  count                   = var.enable_waf ? 1 : 0
  provider                = aws.us_east_1
  description             = "${var.name}: WAF logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # In a key policy "Resource": "*" means this key.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = local.account_root }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.us-east-1.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:us-east-1:${data.aws_caller_identity.current.account_id}:log-group:aws-waf-logs-${var.name}"
          }
        }
      },
    ]
  })
}

resource "aws_wafv2_web_acl_logging_configuration" "cdn" {
  count                   = var.enable_waf ? 1 : 0
  provider                = aws.us_east_1
  resource_arn            = aws_wafv2_web_acl.cdn[0].arn
  log_destination_configs = [aws_cloudwatch_log_group.waf[0].arn]
}
