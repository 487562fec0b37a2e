# Secrets Manager holds everything secret the tasks need, encrypted with the deployment's
# KMS key; ECS injects them as environment variables at task start (compute.tf), and the
# task execution role is the only one that reads them (iam.tf). Note: the generated values
# (database password, Redis token, CloudFront private key, store access keys) are also in
# the terraform state: keep the state in an encrypted, access-controlled backend.

# The rendered configuration of each role (it holds the database URL with its password;
# the gateways' also the Redis URL with its token).
resource "aws_secretsmanager_secret" "config" {
  for_each                = toset(["gateway", "worker"])
  name                    = "${var.name}/config/${each.key}"
  description             = "Sluice configuration file of the ${each.key}s (TOML)"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "config" {
  for_each      = aws_secretsmanager_secret.config
  secret_id     = each.value.id
  secret_string = local.sluice_config[each.key]
}

# The private key of CloudFront's trusted key group: Sluice signs URLs and cookies with it
# ([cdn.cloudfront] private_key_file), CloudFront verifies with its public key (cdn.tf).
resource "tls_private_key" "cloudfront" {
  algorithm = "RSA"
  rsa_bits  = 2048
}

resource "aws_secretsmanager_secret" "cloudfront_key" {
  name                    = "${var.name}/cloudfront-private-key"
  description             = "RSA private key (PEM) Sluice signs CloudFront URLs and cookies with"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "cloudfront_key" {
  secret_id     = aws_secretsmanager_secret.cloudfront_key.id
  secret_string = tls_private_key.cloudfront.private_key_pem
}

# The admin key (SLUICE_ADMIN_KEY): set here so that no gateway generates its own.
resource "random_password" "admin_key" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "admin_key" {
  name                    = "${var.name}/admin-key"
  description             = "Sluice admin key (SLUICE_ADMIN_KEY)"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "admin_key" {
  secret_id     = aws_secretsmanager_secret.admin_key.id
  secret_string = random_password.admin_key.result
}

# The S3 credentials of each role (iam.tf): Sluice's S3 client takes an access key pair
# (SLUICE_STORE_{NAME}_ACCESS_KEY_ID / _SECRET_ACCESS_KEY), not the task role's
# temporary credentials.
resource "aws_secretsmanager_secret" "store_credentials" {
  for_each                = aws_iam_access_key.store
  name                    = "${var.name}/store-credentials/${each.key}"
  description             = "S3 access key pair of the Sluice ${each.key}s"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "store_credentials" {
  for_each  = aws_iam_access_key.store
  secret_id = aws_secretsmanager_secret.store_credentials[each.key].id
  secret_string = jsonencode({
    access_key_id     = each.value.id
    secret_access_key = each.value.secret
  })
}
