# What feeds Sluice's configuration (templates/sluice.toml.tftpl renders it; the rendered
# files are in Secrets Manager, see config_secret_arns) and what operators need.

output "public_url" {
  description = "public_url and cdn.cloudfront.domain: the viewers' and clients' base URL."
  value       = "https://${var.cdn_domain_name}"
}

output "cloudfront_distribution_domain" {
  description = "Point cdn_domain_name (CNAME/alias) at this."
  value       = aws_cloudfront_distribution.sluice.domain_name
}

output "cloudfront_key_pair_id" {
  description = "cdn.cloudfront.key_pair_id: the public key's id in the trusted key group."
  value       = aws_cloudfront_public_key.sluice.id
}

output "load_balancer_dns_name" {
  description = "Point origin_domain_name (CNAME/alias) at this."
  value       = aws_lb.gateways.dns_name
}

output "store_buckets" {
  description = "storage.stores.{hot,warm,cold}.url (s3://BUCKET)."
  value       = { for k, b in aws_s3_bucket.store : k => b.bucket }
}

output "database_endpoint" {
  description = "Host and port of database_url (the password is only in the config secret)."
  value       = "${aws_db_instance.sluice.address}:${aws_db_instance.sluice.port}"
}

output "redis_endpoint" {
  description = "Host of rate_limit.redis_url (rediss://; the token is only in the config secret)."
  value       = aws_elasticache_replication_group.sluice.primary_endpoint_address
}

output "config_secret_arns" {
  description = "The rendered Sluice configuration of each service, in Secrets Manager."
  value       = { for k, s in aws_secretsmanager_secret.config : k => s.arn }
}

output "admin_key_secret_arn" {
  description = "SLUICE_ADMIN_KEY, for `sluice ops` (readable by the ops role)."
  value       = aws_secretsmanager_secret.admin_key.arn
}

output "ops_role_arn" {
  description = "The role operators assume to run `sluice ops` and roll the services."
  value       = aws_iam_role.ops.arn
}

output "sluice_config" {
  description = "The rendered configuration of each service (holds the database password and Redis token)."
  value       = local.sluice_config
  sensitive   = true
}
