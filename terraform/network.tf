# Security groups in the existing VPC (var.vpc_id): CloudFront → load balancer → gateways;
# gateways and workers → PostgreSQL and Redis. Nothing else is reachable.

# CloudFront's origin-facing addresses (AWS-managed prefix list): only CloudFront reaches
# the load balancer, and the listener also requires the secret origin header (cdn.tf).
data "aws_ec2_managed_prefix_list" "cloudfront_origin" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Sluice load balancer: HTTPS from CloudFront only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from CloudFront origin-facing servers"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = data.aws_ec2_managed_prefix_list.cloudfront_origin.id
}

resource "aws_vpc_security_group_egress_rule" "alb_to_gateways" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateways' listener"
  ip_protocol                  = "tcp"
  from_port                    = local.sluice_port
  to_port                      = local.sluice_port
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_security_group" "gateway" {
  name        = "${var.name}-gateway"
  description = "Sluice gateways: the listener from the load balancer only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_alb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "Listener from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.sluice_port
  to_port                      = local.sluice_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_security_group" "worker" {
  name        = "${var.name}-worker"
  description = "Sluice workers: no inbound traffic"
  vpc_id      = var.vpc_id
}

# Gateways and workers call HTTPS APIs (S3, Secrets Manager, ECR, CloudWatch, the JWKS
# of an identity provider, webhook receivers), PostgreSQL and Redis.
resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = { gateway = aws_security_group.gateway.id, worker = aws_security_group.worker.id }
  security_group_id = each.value
  description       = "HTTPS to AWS APIs, JWKS and webhook receivers"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "to_db" {
  for_each                     = { gateway = aws_security_group.gateway.id, worker = aws_security_group.worker.id }
  security_group_id            = each.value
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_egress_rule" "to_redis" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "Redis (rate limits)"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "Sluice PostgreSQL: from gateways and workers only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db" {
  for_each                     = { gateway = aws_security_group.gateway.id, worker = aws_security_group.worker.id }
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the ${each.key}s"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "Sluice Redis: from gateways only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from the gateways"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.gateway.id
}
