"""Settings: one validated object; each mistake named in one line."""

from __future__ import annotations

import sys

import pytest

from indexer.errors import SettingsError
from indexer import settings as settings_module
from indexer.settings import Settings


def settings(**env: str) -> Settings:
    return Settings.from_env({"ELASTICSEARCH_URL": "https://search.example.com:9200", **env})


def test_defaults_follow_the_contract():
    s = Settings.from_env({"TABLE_NAME": "My.Table"})
    assert s.elasticsearch_url == "http://localhost:9200" and s.index_name == "my.table"
    assert s.search_backend == "elasticsearch" and s.search_auth == "none" and s.verify_certs


def test_credentials_choose_the_authentication():
    assert settings(ELASTICSEARCH_API_KEY="k").search_auth == "api_key"
    assert settings(ELASTICSEARCH_USERNAME="u", ELASTICSEARCH_PASSWORD="p").search_auth == "basic"


def test_amazon_opensearch_hosts_are_signed_with_sigv4_for_their_region_and_service():
    s = settings(SEARCH_BACKEND="opensearch", ELASTICSEARCH_URL="https://search-x-abc.eu-west-1.es.amazonaws.com")
    assert (s.search_auth, s.aws_region, s.sigv4_service) == ("sigv4", "eu-west-1", "es")
    s = settings(SEARCH_BACKEND="opensearch", ELASTICSEARCH_URL="https://abc.us-east-2.aoss.amazonaws.com")
    assert (s.search_auth, s.aws_region, s.sigv4_service) == ("sigv4", "us-east-2", "aoss")
    s = settings(SEARCH_BACKEND="opensearch", ELASTICSEARCH_URL="http://localhost:9200")
    assert s.search_auth == "none"


@pytest.mark.parametrize("env", [
    {"ELASTICSEARCH_URL": "http://search.example.com:9200", "ELASTICSEARCH_API_KEY": "k"},
    {"ELASTICSEARCH_URL": "http://search.example.com:9200", "ELASTICSEARCH_USERNAME": "u", "ELASTICSEARCH_PASSWORD": "p"},
    {"ELASTICSEARCH_URL": "http://search.example.com:9200",
     "ELASTICSEARCH_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:search-AbCdEf"},
], ids=["api_key", "basic", "secret"])
def test_credentials_over_plain_http_are_refused_unless_allowed_explicitly(env):
    with pytest.raises(SettingsError, match="ELASTICSEARCH_ALLOW_INSECURE=true"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "ELASTICSEARCH_ALLOW_INSECURE": "true"}).search_auth != "none"


def test_credentials_with_certificate_verification_off_are_refused_unless_allowed_explicitly():
    env = {"ELASTICSEARCH_URL": "https://search.example.com", "ELASTICSEARCH_API_KEY": "k",
           "ELASTICSEARCH_VERIFY_CERTS": "false"}
    with pytest.raises(SettingsError, match="ELASTICSEARCH_VERIFY_CERTS=false with SEARCH_AUTH=api_key"):
        Settings.from_env(env)
    assert not Settings.from_env({**env, "ELASTICSEARCH_ALLOW_INSECURE": "true"}).verify_certs
    assert not Settings.from_env({"ELASTICSEARCH_VERIFY_CERTS": "false"}).verify_certs  # no credentials: allowed


def test_an_invalid_url_is_echoed_without_its_password():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ELASTICSEARCH_URL": "ftp://elastic:hunter2@search.example.com"})
    assert "hunter2" not in str(caught.value) and "ftp://***@search.example.com" in str(caught.value)


def test_secrets_never_show_in_the_settings_repr():
    s = settings(ELASTICSEARCH_USERNAME="u", ELASTICSEARCH_PASSWORD="hunter2", DLQ_URL="https://q")
    assert "hunter2" not in repr(s) and "basic" in repr(s)
    assert "sekrit" not in repr(settings(ELASTICSEARCH_API_KEY="sekrit"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ELASTICSEARCH_URL": "localhost:9200"}, "ELASTICSEARCH_URL must be an http:// or https:// URL"),
        ({"ELASTICSEARCH_URL": "https://u:p@host"}, "must not hold credentials"),
        ({"ELASTICSEARCH_USERNAME": "u"}, "must be set together"),
        ({"ELASTICSEARCH_VERIFY_CERTS": "maybe"}, "ELASTICSEARCH_VERIFY_CERTS must be true or false"),
        ({"ELASTICSEARCH_CA_CERTS": "no/such.pem"}, "ELASTICSEARCH_CA_CERTS names no file"),
        ({"SEARCH_BACKEND": "solr"}, "SEARCH_BACKEND must be one of"),
        ({"SEARCH_AUTH": "kerberos"}, "SEARCH_AUTH must be one of"),
        ({"SEARCH_AUTH": "sigv4"}, "set SEARCH_BACKEND=opensearch"),
        ({"SEARCH_BACKEND": "opensearch", "SEARCH_AUTH": "sigv4"}, "AWS_REGION is required"),
        ({"SEARCH_BACKEND": "opensearch", "ELASTICSEARCH_API_KEY": "k"}, "OpenSearch takes basic auth or SigV4"),
        ({"SEARCH_BACKEND": "opensearch", "SIGV4_SERVICE": "s3"}, "SIGV4_SERVICE must be es or aoss"),
        ({"INDEX_NAME": "Bad Name"}, "INDEX_NAME 'Bad Name' cannot name an Elasticsearch alias"),
        ({"TABLE_NAME": "_hidden"}, "TABLE_NAME (lower-cased, as the default INDEX_NAME)"),
        ({"DLQ_URL": "queue"}, "DLQ_URL must be an SQS queue URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"ELASTICSEARCH_TIMEOUT": "soon"}, "ELASTICSEARCH_TIMEOUT must be a number"),
        ({"RETRY_MAX_ATTEMPTS": "0"}, "RETRY_MAX_ATTEMPTS must be greater than 0"),
        ({"INDEX_MAPPING": "{nope"}, "INDEX_MAPPING: its value is not valid JSON"),
        ({"INDEX_MAPPING": "no/such/file.json"}, "INDEX_MAPPING: cannot read 'no/such/file.json'"),
        ({"ELASTICSEARCH_SECRET_ARN": "search-credentials"}, "ELASTICSEARCH_SECRET_ARN must be a Secrets Manager secret ARN"),
        ({"ELASTICSEARCH_ALLOW_INSECURE": "sure"}, "ELASTICSEARCH_ALLOW_INSECURE must be true or false"),
        ({"INDEX_MAPPING": "/dev/zero"}, "INDEX_MAPPING: '/dev/zero' is not a regular file"),
        ({"INDEX_MAPPING": sys.executable}, "is not UTF-8 text"),
        ({"INDEX_MAPPING": '{"settings": {"x": NaN}}'}, "INDEX_MAPPING: its value is not valid JSON (NaN is not JSON)"),
        ({"INDEX_MAPPING": '{"a": ' + "[" * 100_000}, "nested too deeply"),
        ({"INDEX_MAPPING": '{"aliases": {}}'}, 'INDEX_MAPPING must be a JSON object with "settings"'),
    ],
)
def test_each_bad_setting_is_named(env, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_required_variables_are_named_with_what_to_do():
    with pytest.raises(SettingsError, match="DLQ_URL is required: set it to the URL of the SQS queue"):
        Settings.from_env({}, require=("DLQ_URL",))


def test_a_mapping_file_larger_than_an_index_body_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (settings_module.MAX_MAPPING_BYTES + 1) + b"{}")
    with pytest.raises(SettingsError, match="larger than"):
        Settings.from_env({"INDEX_MAPPING": str(big)})


def test_a_deeply_nested_mapping_file_is_one_clear_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"mappings": ' + "[" * 50_000)
    with pytest.raises(SettingsError, match="nested too deeply"):
        settings_module.mapping_file(str(deep), "--mapping")
