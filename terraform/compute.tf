# Gateways and workers on ECS Fargate (docs/design/0005-ecs-fargate.md): gateways
# (`sluice serve`, in-process workers off) behind an HTTPS load balancer checked on
# /readyz and scaled on CPU and requests; workers (`sluice worker`) scaled on the queue
# depth the gateways export (sluice_queue_jobs, docs/hardening.md).

locals {
  sluice_port = 8080
  config_file = "/run/sluice/sluice.toml"
  key_file    = "/run/sluice/cloudfront.pem"
  data_dir    = "/var/lib/sluice"

  # What templates/sluice.toml.tftpl is rendered with, per role (the example in
  # examples/sluice.toml is this with sample values; tests/e2e/test_terraform.py renders
  # it and loads it with `sluice serve --check`).
  config_vars = {
    for role in ["gateway", "worker"] : role => {
      role                        = role
      name                        = var.name
      config_file                 = local.config_file
      port                        = local.sluice_port
      data_dir                    = local.data_dir
      public_url                  = "https://${var.cdn_domain_name}"
      database_url                = "postgres://${aws_db_instance.sluice.username}:${random_password.db.result}@${aws_db_instance.sluice.address}:${aws_db_instance.sluice.port}/${aws_db_instance.sluice.db_name}?sslmode=require"
      trusted_proxies             = [data.aws_vpc.sluice.cidr_block]
      cache_bytes                 = var.gateway_cache_bytes
      hot_bucket                  = aws_s3_bucket.store["hot"].bucket
      warm_bucket                 = aws_s3_bucket.store["warm"].bucket
      cold_bucket                 = aws_s3_bucket.store["cold"].bucket
      region                      = var.region
      warm_storage_class          = var.warm_storage_class
      cold_storage_class          = var.cold_storage_class
      worker_concurrency          = var.worker_concurrency
      redis_url                   = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.sluice.primary_endpoint_address}:6379"
      cloudfront_domain           = "https://${var.cdn_domain_name}"
      cloudfront_key_pair_id      = aws_cloudfront_public_key.sluice.id
      cloudfront_private_key_file = local.key_file
    }
  }
  sluice_config = {
    for role, vars in local.config_vars : role => templatefile("${path.module}/templates/sluice.toml.tftpl", vars)
  }

  # The task writes its secrets (injected as environment variables) to files on a
  # task-private volume, drops them from the environment and starts Sluice.
  start = {
    gateway = "umask 077 && printf '%s' \"$SLUICE_CONFIG_TOML\" > ${local.config_file} && printf '%s' \"$SLUICE_CLOUDFRONT_KEY_PEM\" > ${local.key_file} && unset SLUICE_CONFIG_TOML SLUICE_CLOUDFRONT_KEY_PEM && exec sluice serve --config ${local.config_file} --log-format json"
    worker  = "umask 077 && printf '%s' \"$SLUICE_CONFIG_TOML\" > ${local.config_file} && unset SLUICE_CONFIG_TOML && exec sluice worker --config ${local.config_file} --log-format json"
  }

  store_env = {
    for role in ["gateway", "worker"] : role => flatten([
      for store in ["HOT", "WARM", "COLD"] : [
        { name = "SLUICE_STORE_${store}_ACCESS_KEY_ID", valueFrom = "${aws_secretsmanager_secret.store_credentials[role].arn}:access_key_id::" },
        { name = "SLUICE_STORE_${store}_SECRET_ACCESS_KEY", valueFrom = "${aws_secretsmanager_secret.store_credentials[role].arn}:secret_access_key::" },
      ]
    ])
  }

  # The collector sidecar: scrapes the gateway's /metrics on localhost every 15 s and
  # publishes sluice_queue_jobs to CloudWatch (namespace Sluice, dimensions kind, status).
  adot_config = yamlencode({
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [{
            job_name        = "sluice"
            scrape_interval = "15s"
            metrics_path    = "/metrics"
            static_configs  = [{ targets = ["127.0.0.1:${local.sluice_port}"] }]
            metric_relabel_configs = [{
              source_labels = ["__name__"]
              regex         = "sluice_queue_jobs"
              action        = "keep"
            }]
          }]
        }
      }
    }
    exporters = {
      awsemf = {
        namespace               = "Sluice"
        log_group_name          = aws_cloudwatch_log_group.metrics.name
        region                  = var.region
        dimension_rollup_option = "NoDimensionRollup"
        metric_declarations = [{
          dimensions            = [["kind", "status"]]
          metric_name_selectors = ["sluice_queue_jobs"]
        }]
      }
    }
    service = {
      pipelines = {
        metrics = { receivers = ["prometheus"], exporters = ["awsemf"] }
      }
    }
  })
}

data "aws_vpc" "sluice" {
  id = var.vpc_id
}

resource "aws_ecs_cluster" "sluice" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each          = toset(["gateway", "worker"])
  name              = "/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

# --- gateways ---

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${var.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = aws_iam_role.execution["gateway"].arn
  task_role_arn            = aws_iam_role.gateway_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "run"
  }
  volume {
    name = "data"
  }

  container_definitions = jsonencode([
    {
      name                   = "sluice"
      image                  = var.image
      essential              = true
      readonlyRootFilesystem = true
      entryPoint             = ["/bin/sh", "-c"]
      command                = [local.start.gateway]
      portMappings           = [{ containerPort = local.sluice_port, protocol = "tcp" }]
      mountPoints = [
        { sourceVolume = "run", containerPath = "/run/sluice", readOnly = false },
        { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
      ]
      secrets = concat([
        { name = "SLUICE_CONFIG_TOML", valueFrom = aws_secretsmanager_secret.config["gateway"].arn },
        { name = "SLUICE_CLOUDFRONT_KEY_PEM", valueFrom = aws_secretsmanager_secret.cloudfront_key.arn },
        { name = "SLUICE_ADMIN_KEY", valueFrom = aws_secretsmanager_secret.admin_key.arn },
      ], local.store_env.gateway)
      stopTimeout = 30
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["gateway"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "sluice"
        }
      }
    },
    {
      name                   = "metrics"
      image                  = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.1"
      essential              = false
      readonlyRootFilesystem = true
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.adot_config }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["gateway"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "metrics"
        }
      }
    },
  ])
}

resource "aws_lb" "gateways" {
  name                       = "${var.name}-gateways"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # Upload bodies can pause (tus); Sluice's own body idle timeout is shorter.
  idle_timeout = 120

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "alb"
    enabled = true
  }
}

resource "aws_lb_target_group" "gateways" {
  name                 = "${var.name}-gateways"
  port                 = local.sluice_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.gateways.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.alb_certificate_arn

  # Requests that did not come through CloudFront are refused.
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\":{\"code\":\"forbidden\",\"message\":\"use the CDN\"}}"
      status_code  = "403"
    }
  }
}

# Prometheus metrics stay inside the task (the sidecar scrapes localhost).
resource "aws_lb_listener_rule" "no_metrics" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10
  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\":{\"code\":\"not_found\",\"message\":\"not found\"}}"
      status_code  = "404"
    }
  }
  condition {
    path_pattern {
      values = ["/metrics", "/metrics/*"]
    }
  }
}

resource "aws_lb_listener_rule" "from_cloudfront" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 20
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateways.arn
  }
  condition {
    http_header {
      http_header_name = "X-Sluice-Origin-Verify"
      values           = [random_password.origin_verify.result]
    }
  }
}

resource "aws_ecs_service" "gateway" {
  name                              = "${var.name}-gateway"
  cluster                           = aws_ecs_cluster.sluice.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_min
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 60
  propagate_tags                    = "SERVICE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateways.arn
    container_name   = "sluice"
    container_port   = local.sluice_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener_rule.from_cloudfront]
}

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.sluice.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.gateway_min
  max_capacity       = var.gateway_max
}

resource "aws_appautoscaling_policy" "gateway_cpu" {
  name               = "${var.name}-gateway-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = 60
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# --- workers ---

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution["worker"].arn
  task_role_arn            = aws_iam_role.worker_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.worker_ephemeral_storage_gib
  }

  volume {
    name = "run"
  }
  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "sluice"
      image                  = var.image
      essential              = true
      readonlyRootFilesystem = true
      entryPoint             = ["/bin/sh", "-c"]
      command                = [local.start.worker]
      mountPoints = [
        { sourceVolume = "run", containerPath = "/run/sluice", readOnly = false },
        { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      secrets = concat([
        { name = "SLUICE_CONFIG_TOML", valueFrom = aws_secretsmanager_secret.config["worker"].arn },
      ], local.store_env.worker)
      # workers.shutdown_grace_s (20 s) + margin: running jobs are released, not lost.
      stopTimeout = 60
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["worker"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "sluice"
        }
      }
    },
  ])
}

resource "aws_ecs_service" "worker" {
  name            = "${var.name}-worker"
  cluster         = aws_ecs_cluster.sluice.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.worker_min
  launch_type     = "FARGATE"
  propagate_tags  = "SERVICE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.sluice.name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min
  max_capacity       = var.worker_max
}

# Queue depth: every gateway publishes the same database-wide count, so the Maximum over
# gateways is the queue.
resource "aws_appautoscaling_policy" "worker_out" {
  name               = "${var.name}-worker-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = 10
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = 10
      scaling_adjustment          = 4
    }
  }
}

resource "aws_appautoscaling_policy" "worker_in" {
  name               = "${var.name}-worker-in"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 300
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = -1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "queue_high" {
  alarm_name          = "${var.name}-transcode-queue-high"
  alarm_description   = "Queued transcodes above ${var.worker_scale_out_queued}: add workers"
  namespace           = "Sluice"
  metric_name         = "sluice_queue_jobs"
  dimensions          = { kind = "transcode", status = "queued" }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.worker_scale_out_queued
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.worker_out.arn]
}

resource "aws_cloudwatch_metric_alarm" "queue_empty" {
  alarm_name          = "${var.name}-transcode-queue-empty"
  alarm_description   = "No transcode queued or running for 15 minutes: remove a worker"
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = 15
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.worker_in.arn]

  metric_query {
    id          = "busy"
    expression  = "queued + running"
    label       = "transcodes queued or running"
    return_data = true
  }
  metric_query {
    id = "queued"
    metric {
      namespace   = "Sluice"
      metric_name = "sluice_queue_jobs"
      dimensions  = { kind = "transcode", status = "queued" }
      stat        = "Maximum"
      period      = 60
    }
  }
  metric_query {
    id = "running"
    metric {
      namespace   = "Sluice"
      metric_name = "sluice_queue_jobs"
      dimensions  = { kind = "transcode", status = "running" }
      stat        = "Maximum"
      period      = 60
    }
  }
}
