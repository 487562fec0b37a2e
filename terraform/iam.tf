# Least privilege per role:
# - gateway / worker S3 identities (IAM users in per-role groups): object reads, writes,
#   deletes and multipart uploads on the three store buckets and nothing else (no bucket
#   configuration, no other bucket). Both roles need the three: gateways run store
#   migrations and the tier/lifecycle sweeps, workers run transcodes and tier moves.
# - task execution roles (one per service): pull the image, write the service's logs, read
#   only that service's secrets (workers never see the CloudFront key or the Redis token).
# - gateway task role: publish the queue-depth metric (the collector sidecar, compute.tf).
# - ops role: for operators running `sluice ops` and deployments: read the admin key, list
#   and read the stores (usage audits), read metrics and logs, roll the services.

locals {
  store_bucket_arns = [for b in aws_s3_bucket.store : b.arn]
  store_object_arns = [for b in aws_s3_bucket.store : "${b.arn}/*"]
}

data "aws_iam_policy_document" "store_access" {
  statement {
    sid       = "ListStores"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = local.store_bucket_arns
  }
  statement {
    sid = "ObjectsInStores"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = local.store_object_arns
  }
  statement {
    sid       = "StoreKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "store_access" {
  name        = "${var.name}-store-access"
  description = "Sluice: objects of the hot, warm and cold stores"
  policy      = data.aws_iam_policy_document.store_access.json
}

resource "aws_iam_group" "store" {
  for_each = toset(["gateway", "worker"])
  name     = "${var.name}-${each.key}-stores"
}

resource "aws_iam_group_policy_attachment" "store" {
  for_each   = aws_iam_group.store
  group      = each.value.name
  policy_arn = aws_iam_policy.store_access.arn
}

resource "aws_iam_user" "store" {
  for_each = aws_iam_group.store
  name     = "${var.name}-${each.key}"
  path     = "/sluice/"
}

resource "aws_iam_user_group_membership" "store" {
  for_each = aws_iam_user.store
  user     = each.value.name
  groups   = [aws_iam_group.store[each.key].name]
}

resource "aws_iam_access_key" "store" {
  for_each = aws_iam_user.store
  user     = each.value.name
}

# --- ECS task execution roles ---

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

locals {
  # The secrets each service's tasks receive (compute.tf).
  role_secret_arns = {
    gateway = [
      aws_secretsmanager_secret.config["gateway"].arn,
      aws_secretsmanager_secret.cloudfront_key.arn,
      aws_secretsmanager_secret.admin_key.arn,
      aws_secretsmanager_secret.store_credentials["gateway"].arn,
    ]
    worker = [
      aws_secretsmanager_secret.config["worker"].arn,
      aws_secretsmanager_secret.store_credentials["worker"].arn,
    ]
  }
}

resource "aws_iam_role" "execution" {
  for_each           = toset(["gateway", "worker"])
  name               = "${var.name}-${each.key}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  for_each = aws_iam_role.execution
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = ["arn:${data.aws_partition.current.partition}:ecr:${var.region}:${data.aws_caller_identity.current.account_id}:repository/*"]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.service[each.key].arn}:*"]
  }
  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.role_secret_arns[each.key]
  }
  statement {
    sid       = "DecryptOwnSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  for_each = aws_iam_role.execution
  name     = "execution"
  role     = each.value.id
  policy   = data.aws_iam_policy_document.execution[each.key].json
}

# --- task roles ---

resource "aws_iam_role" "gateway_task" {
  name               = "${var.name}-gateway-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# The collector sidecar writes the scraped queue gauge as CloudWatch embedded metrics.
data "aws_iam_policy_document" "gateway_task" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "gateway_task" {
  name   = "queue-metric"
  role   = aws_iam_role.gateway_task.id
  policy = data.aws_iam_policy_document.gateway_task.json
}

resource "aws_iam_role" "worker_task" {
  name               = "${var.name}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# --- ops ---

data "aws_iam_policy_document" "ops_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = length(var.ops_principal_arns) > 0 ? var.ops_principal_arns : ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_iam_role" "ops" {
  name                 = "${var.name}-ops"
  assume_role_policy   = data.aws_iam_policy_document.ops_assume.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "ops" {
  statement {
    sid       = "AdminKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.admin_key.arn]
  }
  statement {
    sid       = "DecryptAdminKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com", "s3.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReadStores"
    actions   = ["s3:ListBucket", "s3:GetObject"]
    resources = concat(local.store_bucket_arns, local.store_object_arns)
  }
  statement {
    sid     = "RollServices"
    actions = ["ecs:DescribeServices", "ecs:UpdateService", "ecs:DescribeTasks"]
    resources = [
      "arn:${data.aws_partition.current.partition}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:service/${aws_ecs_cluster.sluice.name}/*",
      "arn:${data.aws_partition.current.partition}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:task/${aws_ecs_cluster.sluice.name}/*",
    ]
  }
  statement {
    sid       = "ListTasks"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.sluice.arn]
    }
  }
  statement {
    sid       = "ReadLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents", "logs:DescribeLogStreams"]
    resources = [for g in aws_cloudwatch_log_group.service : "${g.arn}:*"]
  }
  statement {
    sid       = "ReadMetrics"
    actions   = ["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"]
    resources = ["*"]
  }
  statement {
    sid       = "ReadAlarms"
    actions   = ["cloudwatch:DescribeAlarms"]
    resources = ["arn:${data.aws_partition.current.partition}:cloudwatch:${var.region}:${data.aws_caller_identity.current.account_id}:alarm:${var.name}-*"]
  }
}

resource "aws_iam_role_policy" "ops" {
  name   = "ops"
  role   = aws_iam_role.ops.id
  policy = data.aws_iam_policy_document.ops.json
}
