"""The reference AWS deployment (terraform/) checked offline, and tied to the configuration
the binary reads: `terraform fmt`, an HCL parse of every file (with the rules the
deployment must keep: bucket lifecycle, encryption, health checks), checkov with every
skipped check justified, and the config template rendered by terraform itself (the same
`templatefile` the deployment calls) then loaded by `sluice serve --config … --check`.

No provider is downloaded: `terraform fmt` and `terraform console` in an empty directory
need none. terraform, checkov (.venv-checkov) and python-hcl2 are installed by
scripts/setup.sh; a missing one fails these tests.
"""

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from conftest import BIN

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "terraform"
TEMPLATE = TF / "templates" / "sluice.toml.tftpl"
SAMPLE = TF / "examples" / "sample-values.json"
EXAMPLE = TF / "examples" / "sluice.toml"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
TIMEOUT_S = 120


def terraform():
    path = shutil.which("terraform")
    assert path, "terraform is not installed (scripts/setup.sh installs it)"
    return path


def tf_env():
    # No user CLI configuration, no checkpoint call home.
    return {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}


def unquote(v):
    """python-hcl2 keeps string literals quoted ('"aws:kms"'): the values without quotes."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    if isinstance(v, list):
        return [unquote(x) for x in v]
    if isinstance(v, dict):
        return {unquote(k): unquote(x) for k, x in v.items() if k != "__is_block__"}
    return v


def parse_all():
    """Every .tf file of terraform/, parsed: {file name: parsed body}."""
    out = {}
    for f in sorted(TF.rglob("*.tf")):
        if ".terraform" in f.parts:
            continue
        with open(f) as fh:
            out[f.name] = unquote(hcl2.load(fh))
    return out


def blocks(parsed, kind, type_):
    """The `kind "type_" "name"` blocks of every file: {name: body}."""
    found = {}
    for body in parsed.values():
        for block in body.get(kind, []):
            for t, named in block.items():
                if t == type_:
                    found.update(named)
    return found


def render(values, tmp_path):
    """templates/sluice.toml.tftpl rendered by terraform's own templatefile(), offline (an
    empty directory needs no provider), with `values` as its variables."""
    work = tmp_path / "render"
    work.mkdir(exist_ok=True)
    shutil.copy(TEMPLATE, work / "sluice.toml.tftpl")
    (work / "vars.json").write_text(json.dumps(values))
    expr = 'base64encode(templatefile("sluice.toml.tftpl", jsondecode(file("vars.json"))))\n'
    r = subprocess.run(
        [terraform(), "console"],
        input=expr,
        cwd=work,
        env=tf_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    assert out.startswith('"') and out.endswith('"'), out
    return base64.b64decode(out.strip('"')).decode()


def check(text, tmp_path, name="sluice.toml"):
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run(
        [BIN, "serve", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")},
    )


def sample():
    return json.loads(SAMPLE.read_text())


def test_terraform_fmt_is_clean():
    r = subprocess.run(
        [terraform(), "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        env=tf_env(),
        timeout=TIMEOUT_S,
    )
    assert r.returncode == 0, f"terraform fmt would change:\n{r.stdout}{r.stderr}"


def test_every_file_parses_and_keeps_the_rules_sluice_needs():
    parsed = parse_all()
    for name in ["network.tf", "storage.tf", "database.tf", "cache.tf", "cdn.tf", "compute.tf",
                 "iam.tf", "secrets.tf", "outputs.tf", "variables.tf"]:
        assert name in parsed, f"terraform/{name} is missing"

    # The store buckets: one lifecycle rule, aborting incomplete multipart uploads, and no
    # transition or expiration (Sluice moves and expires its own objects).
    lifecycle = blocks(parsed, "resource", "aws_s3_bucket_lifecycle_configuration")["store"]
    rules = lifecycle["rule"]
    assert len(rules) == 1, rules
    rule = rules[0]
    assert "abort_incomplete_multipart_upload" in rule, rule
    for forbidden in ["transition", "expiration", "noncurrent_version_transition",
                      "noncurrent_version_expiration"]:
        assert forbidden not in rule, f"store buckets must not {forbidden} objects: {rule}"

    sse = blocks(parsed, "resource", "aws_s3_bucket_server_side_encryption_configuration")
    default = sse["store"]["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms", default
    pab = blocks(parsed, "resource", "aws_s3_bucket_public_access_block")
    for name in ["store", "logs"]:
        for key in ["block_public_acls", "block_public_policy", "ignore_public_acls",
                    "restrict_public_buckets"]:
            assert pab[name][key] is True, (name, key)

    # Cold is versioned (checkov cannot evaluate the conditional: .checkov.yaml says so).
    local_stores = None
    for body in parsed.values():
        for loc in body.get("locals", []):
            if "stores" in loc:
                local_stores = loc["stores"]
    assert local_stores and local_stores["cold"]["versioned"] is True, local_stores
    assert local_stores["cold"]["storage_class"] == "${var.cold_storage_class}"

    # Database and Redis: private, encrypted at rest and in transit, backed up.
    db = blocks(parsed, "resource", "aws_db_instance")["sluice"]
    assert db["publicly_accessible"] is False and db["storage_encrypted"] is True
    params = blocks(parsed, "resource", "aws_db_parameter_group")["sluice"]["parameter"]
    assert {"name": "rds.force_ssl", "value": "1"} in params, params
    redis = blocks(parsed, "resource", "aws_elasticache_replication_group")["sluice"]
    assert redis["at_rest_encryption_enabled"] is True
    assert redis["transit_encryption_enabled"] is True
    assert redis["snapshot_retention_limit"] == "${var.redis_snapshot_retention_days}"

    # Gateways: health checks on /readyz; playback behaviours signed by the key group.
    tg = blocks(parsed, "resource", "aws_lb_target_group")["gateways"]
    assert tg["health_check"][0]["path"] == "/readyz"
    cf = blocks(parsed, "resource", "aws_cloudfront_distribution")["sluice"]
    behaviours = {b["path_pattern"]: b for b in cf["ordered_cache_behavior"]}
    assert set(behaviours) == {"/v1/play/*.m3u8", "/v1/play/*"}, behaviours
    for b in behaviours.values():
        assert b["trusted_key_groups"] == ["${aws_cloudfront_key_group.sluice.id}"], b
    assert cf["origin"][0]["origin_shield"][0]["enabled"] is True
    assert "logging_config" in cf
    waf = blocks(parsed, "resource", "aws_wafv2_web_acl")["cdn"]
    groups = [r["statement"][0].get("managed_rule_group_statement", [{}])[0].get("name")
              for r in waf["rule"]]
    assert "AWSManagedRulesKnownBadInputsRuleSet" in groups, groups

    # The variables the config template is rendered with are the sample's (so the sample
    # rendering below is the deployment's, value for value).
    config_vars = None
    for body in parsed.values():
        for loc in body.get("locals", []):
            if "config_vars" in loc:
                config_vars = loc["config_vars"]
    assert config_vars is not None, "locals.config_vars (compute.tf) is missing"
    m = re.search(r"=>\s*\{(.*)\}\s*\}\s*\}?\s*$", config_vars, re.S)
    assert m, config_vars
    keys = set(re.findall(r"(?:^|[\s{,])([a-z_]+)\s*=(?!=)", m.group(1)))
    assert keys == set(sample()), f"config_vars {sorted(keys)} != sample {sorted(sample())}"


def test_checkov_finds_nothing_and_every_skip_has_a_reason():
    assert CHECKOV.exists(), f"{CHECKOV} is missing (scripts/setup.sh installs checkov)"
    config = TF / ".checkov.yaml"
    skips = []
    for line in config.read_text().splitlines():
        m = re.match(r"\s*-\s*(CKV2?_[A-Z]+_\d+)\s*(#\s*(.*))?$", line)
        if m:
            assert m.group(3) and len(m.group(3)) > 20, f"skipped without a reason: {line}"
            skips.append(m.group(1))
    assert skips, "no skip list found in .checkov.yaml"
    r = subprocess.run(
        [str(CHECKOV), "-d", str(TF), "--config-file", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    report = json.loads(r.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']})"
        for rep in reports
        for f in rep["results"]["failed_checks"]
    ]
    assert not failed, "checkov findings:\n" + "\n".join(failed)
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 100 and summary["resource_count"] > 50, summary
    assert r.returncode == 0, r.stderr


def test_the_rendered_config_is_the_example_and_the_binary_accepts_it(tmp_path):
    values = sample()
    gateway = render(values, tmp_path)
    assert gateway == EXAMPLE.read_text(), (
        "terraform/examples/sluice.toml differs from the template rendered with "
        "examples/sample-values.json: re-render it"
    )
    r = check(gateway, tmp_path, "gateway.toml")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout, r.stdout
    for line in ["database: postgresql", "named stores: cold, hot, warm",
                 "tiers: hot=hot warm=warm cold=cold", "rate limit backend: redis",
                 "cloudfront signing: on"]:
        assert line in r.stdout, r.stdout
    # Nothing secret in the check's output.
    for secret in ["DB_PASSWORD", "REDIS_AUTH_TOKEN"]:
        assert secret not in r.stdout + r.stderr

    worker = render({**values, "role": "worker"}, tmp_path)
    assert "[cdn.cloudfront]" not in worker and "redis" not in worker, worker
    r = check(worker, tmp_path, "worker.toml")
    assert r.returncode == 0, r.stderr
    assert "rate limit backend: memory" in r.stdout and "cloudfront signing: off" in r.stdout


@pytest.mark.parametrize(
    "change, error",
    [
        ({"cold_storage_class": "glacier ir"},
         "storage.stores.cold.storage_class must be an S3 class name"),
        ({"database_url": "mysql://sluice@db:3306/sluice"}, "database_url must be a postgres://"),
        ({"cloudfront_domain": "video.example.com"}, "cdn.cloudfront.domain must be a base URL"),
        ({"cold_bucket": "Bad_Bucket!"}, "storage.stores.cold"),
    ],
)
def test_a_broken_rendered_config_is_refused_with_a_clear_error(tmp_path, change, error):
    text = render({**sample(), **change}, tmp_path)
    r = check(text, tmp_path)
    assert r.returncode != 0, r.stdout
    assert "config check failed" in r.stderr, r.stderr
    assert error in r.stderr, r.stderr
    assert "listening on" not in r.stdout
