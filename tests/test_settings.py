import json

import pytest

from shared.settings import SettingsError, load_settings

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST_ID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def env(**overrides):
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "MAILCHIMP_API_KEY": KEY,
        "DATAVERSE_URL": "https://contoso.crm4.dynamics.com/",
        "SYNC_LINKS": json.dumps(
            [{"name": "newsletter", "marketingListId": LIST_ID, "audienceId": "a1b2c3d4e5", "tag": "crm"}]
        ),
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def problems(**overrides):
    with pytest.raises(SettingsError) as caught:
        load_settings(env(**overrides))
    return [str(p) for p in caught.value.problems]


def test_defaults_follow_the_contract():
    settings = load_settings(env())
    assert settings.mailchimp_base_url == "https://us21.api.mailchimp.com/3.0"
    assert settings.dataverse_url == "https://contoso.crm4.dynamics.com"
    assert settings.sync_schedule == "0 */15 * * * *"
    assert settings.full_resync_hours == 24
    assert settings.resubscribe_policy == "never"
    assert settings.new_member_status == "subscribed"
    assert settings.opt_out_columns == ("donotbulkemail", "donotsendmm")
    assert settings.dataverse_prefix == "cbr"
    assert settings.subscriber_status_column == "cbr_subscriberstatus"
    assert settings.mailchimp_max_connections == 8
    assert settings.batch_size == 500
    assert settings.opt_out_rollup == "all"
    assert load_settings(env(OPT_OUT_ROLLUP="any")).opt_out_rollup == "any"
    assert settings.links[0].name == "newsletter" and settings.links[0].tag == "crm"
    assert not settings.dataverse_is_emulator


def test_missing_required_settings_each_get_one_line():
    lines = problems(MAILCHIMP_API_KEY=None, DATAVERSE_URL=None, SYNC_LINKS=None, AzureWebJobsStorage=None)
    assert sorted(line.split(":")[0] for line in lines) == [
        "AzureWebJobsStorage",
        "DATAVERSE_URL",
        "MAILCHIMP_API_KEY",
        "SYNC_LINKS",
    ]
    assert all("\n" not in line for line in lines)


def test_a_malformed_key_is_named_but_never_shown():
    secret = "not-a-real-key-but-secret-looking"
    lines = problems(MAILCHIMP_API_KEY=secret)
    assert lines[0].startswith("MAILCHIMP_API_KEY: expected")
    assert secret not in "\n".join(lines)


def test_an_unresolved_key_vault_reference_says_what_to_check():
    lines = problems(MAILCHIMP_API_KEY="@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/mc/)")
    assert "Key Vault reference was not resolved" in lines[0]


def test_settings_repr_hides_the_key():
    assert KEY not in repr(load_settings(env()))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("not json", "SYNC_LINKS: is not valid JSON"),
        ("[]", "SYNC_LINKS: expected a JSON array"),
        ('{"name": "x"}', "SYNC_LINKS: expected a JSON array"),
        ('[{"name": "Bad Name", "marketingListId": "%s", "audienceId": "a1"}]' % LIST_ID, "SYNC_LINKS[0].name"),
        ('[{"name": "a", "marketingListId": "nope", "audienceId": "a1"}]', "SYNC_LINKS[0].marketingListId"),
        ('[{"name": "a", "marketingListId": "%s"}]' % LIST_ID, "SYNC_LINKS[0].audienceId"),
        (
            '[{"name": "a", "marketingListId": "%s", "audienceId": "a1", "colour": 1}]' % LIST_ID,
            "unknown key(s) colour",
        ),
        (
            '[{"name": "a", "marketingListId": "%s", "audienceId": "a1"}, '
            '{"name": "a", "marketingListId": "%s", "audienceId": "b2"}]' % (LIST_ID, LIST_ID),
            "must be unique",
        ),
    ],
)
def test_malformed_sync_links_name_the_link_and_the_form(value, expected):
    assert any(expected in line for line in problems(SYNC_LINKS=value))


@pytest.mark.parametrize(
    "name, value",
    [
        ("SYNC_SCHEDULE", "*/15 * * * *"),
        ("FULL_RESYNC_HOURS", "-1"),
        ("RESUBSCRIBE_POLICY", "always"),
        ("NEW_MEMBER_STATUS", "unsubscribed"),
        ("OPT_OUT_ROLLUP", "some"),
        ("OPT_OUT_COLUMNS", "donot bulk"),
        ("DATAVERSE_PREFIX", "CBR_"),
        ("SUBSCRIBER_STATUS_COLUMN", "Status Column"),
        ("MAILCHIMP_MAX_CONNECTIONS", "11"),
        ("BATCH_SIZE", "many"),
        ("DATAVERSE_URL", "http://contoso.crm4.dynamics.com"),
        ("MAILCHIMP_BASE_URL", "http://mailchimp.example.org/3.0"),
        ("MAILCHIMP_BASE_URL", "https://myserver.example.org/3.0"),
        ("AZURE_CLIENT_ID", "not-a-guid"),
    ],
)
def test_each_malformed_setting_is_named(name, value):
    lines = problems(**{name: value})
    assert len(lines) == 1 and lines[0].startswith(f"{name}: ")


def test_loopback_urls_mean_the_emulators():
    settings = load_settings(
        env(DATAVERSE_URL="http://127.0.0.1:5555", MAILCHIMP_BASE_URL="http://127.0.0.1:4444/3.0/")
    )
    assert settings.dataverse_is_emulator
    assert settings.mailchimp_base_url == "http://127.0.0.1:4444/3.0"


def test_an_empty_status_column_disables_it():
    assert load_settings(env(SUBSCRIBER_STATUS_COLUMN="")).subscriber_status_column is None


def test_identity_based_storage_is_accepted():
    settings = load_settings(
        env(
            AzureWebJobsStorage=None,
            AzureWebJobsStorage__accountName="cbrstore",
            AzureWebJobsStorage__clientId="6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
        )
    )
    assert settings.storage.queue_service_uri == "https://cbrstore.queue.core.windows.net"
    assert settings.storage.table_service_uri == "https://cbrstore.table.core.windows.net"


def test_unknown_link_names_the_configured_ones():
    settings = load_settings(env())
    with pytest.raises(SettingsError, match="no link named 'other' \\(configured: newsletter\\)"):
        settings.link("other")


def test_the_real_time_path_needs_both_its_settings_and_never_shows_the_secret():
    secret = "s3cret-" + "x" * 30
    settings = load_settings(env(PUBLIC_BASE_URL="https://cbr.azurewebsites.net/", WEBHOOK_SECRET=secret))
    assert settings.public_base_url == "https://cbr.azurewebsites.net" and settings.webhook_secret == secret
    assert secret not in repr(settings)
    assert load_settings(env()).public_base_url is None
    assert problems(PUBLIC_BASE_URL="https://cbr.azurewebsites.net") == [
        "WEBHOOK_SECRET: is required when PUBLIC_BASE_URL is set: 32 or more random characters"
    ]
    [short] = problems(PUBLIC_BASE_URL="http://127.0.0.1:7071", WEBHOOK_SECRET="too-short")
    assert short.startswith("WEBHOOK_SECRET: expected 32 or more") and "too-short" not in short
    [plain] = problems(PUBLIC_BASE_URL="http://example.org", WEBHOOK_SECRET=secret)
    assert plain.startswith("PUBLIC_BASE_URL: expected the function app's root")
    [unresolved] = problems(WEBHOOK_SECRET="@Microsoft.KeyVault(SecretUri=https://kv/secrets/webhook-secret/)")
    assert "Key Vault reference was not resolved" in unresolved
