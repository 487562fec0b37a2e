# The reference AWS deployment of Sluice: docs/deploy-aws.md explains the architecture,
# sizing, costs and the upgrade path from the embedded default (SQLite + local store).
terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { "sluice:deployment" = var.name })
  }
}

# CloudFront's ACM certificate and WAF web ACL must live in us-east-1.
provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"

  default_tags {
    tags = merge(var.tags, { "sluice:deployment" = var.name })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
