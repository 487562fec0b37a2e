# Everything environment-specific. Defaults are a small production deployment; sizing
# guidance with the measured figures behind it: docs/deploy-aws.md.

variable "name" {
  description = "Deployment name: prefix of every resource name (lower-case letters, digits, '-')."
  type        = string
  default     = "sluice"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2 to 21 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region of everything except CloudFront's certificate and WAF (us-east-1)."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- network (an existing VPC: most organisations have one per environment) ---

variable "vpc_id" {
  description = "The VPC Sluice runs in."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (at least two AZs) for the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two AZs, with a NAT or VPC endpoints for S3, ECR, Secrets Manager, CloudWatch) for the tasks, the database and Redis."
  type        = list(string)
}

# --- DNS names and certificates ---

variable "cdn_domain_name" {
  description = "The viewers' host name on CloudFront (e.g. video.example.com): Sluice's public_url and cdn.cloudfront.domain."
  type        = string
}

variable "cdn_certificate_arn" {
  description = "ACM certificate in us-east-1 covering cdn_domain_name."
  type        = string
}

variable "origin_domain_name" {
  description = "Host name pointing at the load balancer (a CNAME/alias you create), which CloudFront connects to over TLS (e.g. origin.video.example.com)."
  type        = string
}

variable "alb_certificate_arn" {
  description = "ACM certificate in var.region covering origin_domain_name."
  type        = string
}

# --- compute ---

variable "image" {
  description = "The Sluice container image (with the sluice binary and GStreamer), e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/sluice:1.2.3."
  type        = string
}

variable "gateway_cpu" {
  description = "Fargate CPU units per gateway task."
  type        = number
  default     = 2048
}

variable "gateway_memory" {
  description = "Fargate memory per gateway task, MiB (the playback cache is gateway.cache_bytes of it)."
  type        = number
  default     = 4096
}

variable "gateway_min" {
  description = "Fewest gateway tasks (two for availability across AZs)."
  type        = number
  default     = 2
}

variable "gateway_max" {
  description = "Most gateway tasks."
  type        = number
  default     = 10
}

variable "gateway_cache_bytes" {
  description = "gateway.cache_bytes: memory for each gateway's playback cache, bytes."
  type        = number
  default     = 1073741824
}

variable "worker_cpu" {
  description = "Fargate CPU units per worker task (a transcode uses every core it gets)."
  type        = number
  default     = 4096
}

variable "worker_memory" {
  description = "Fargate memory per worker task, MiB."
  type        = number
  default     = 8192
}

variable "worker_min" {
  description = "Fewest worker tasks."
  type        = number
  default     = 1
}

variable "worker_max" {
  description = "Most worker tasks."
  type        = number
  default     = 20
}

variable "worker_concurrency" {
  description = "workers.concurrency: transcodes at once per worker task."
  type        = number
  default     = 1
}

variable "worker_scale_out_queued" {
  description = "Queued transcode jobs (sluice_queue_jobs{kind=transcode,status=queued}) above which workers are added."
  type        = number
  default     = 2
}

variable "worker_ephemeral_storage_gib" {
  description = "Fargate ephemeral storage per worker, GiB (a transcode's scratch files)."
  type        = number
  default     = 100
}

# --- database and cache ---

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "db_allocated_storage_gib" {
  description = "RDS storage, GiB (grows automatically up to db_max_allocated_storage_gib)."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage_gib" {
  description = "Largest RDS storage autoscaling may reach, GiB."
  type        = number
  default     = 500
}

variable "db_engine_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "db_multi_az" {
  description = "A standby in a second AZ."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery)."
  type        = number
  default     = 14
}

variable "redis_node_type" {
  description = "ElastiCache node type (rate-limit counters: small)."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_snapshot_retention_days" {
  description = "Days of ElastiCache snapshots."
  type        = number
  default     = 7
}

# --- storage ---

variable "warm_storage_class" {
  description = "Storage class Sluice writes warm objects with (storage.stores.warm.storage_class)."
  type        = string
  default     = "STANDARD_IA"
}

variable "cold_storage_class" {
  description = "Storage class Sluice writes cold objects with. An instant-retrieval class: Sluice restores by reading cold objects, which GLACIER/DEEP_ARCHIVE refuse (docs/storage-tiers.md)."
  type        = string
  default     = "GLACIER_IR"

  validation {
    condition     = contains(["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"], var.cold_storage_class)
    error_message = "cold_storage_class must be readable without an S3 restore request (GLACIER_IR, not GLACIER or DEEP_ARCHIVE)."
  }
}

variable "abort_multipart_after_days" {
  description = "Days after which the buckets abort incomplete multipart uploads (longer than uploads.expire_after_s)."
  type        = number
  default     = 3
}

variable "log_retention_days" {
  description = "Days of CloudWatch logs and of CloudFront/ALB access logs."
  type        = number
  default     = 365
}

# --- edge ---

variable "enable_waf" {
  description = "Attach a WAFv2 web ACL (AWS managed common and known-bad-inputs rules, a per-IP rate limit) to CloudFront."
  type        = bool
  default     = true
}

variable "waf_rate_limit_per_5min" {
  description = "Requests per client IP per five minutes before WAF blocks it (only with enable_waf)."
  type        = number
  default     = 20000
}

variable "origin_shield_region" {
  description = "Origin Shield region (the one nearest the load balancer)."
  type        = string
  default     = "eu-west-1"
}

variable "cloudfront_price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_100"
}

variable "ops_principal_arns" {
  description = "IAM principals (roles of operators or CI) allowed to assume the ops role that runs `sluice ops` and reads the secrets."
  type        = list(string)
  default     = []
}
