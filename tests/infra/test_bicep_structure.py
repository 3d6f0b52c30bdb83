"""Structural checks over the parsed Bicep templates: what a reviewer would check by eye, made repeatable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra import templates as t

FUNCTION_APP = t.module_path("functionapp")

# Contract settings (design.md §Settings) fed from a main.bicep parameter: setting -> (parameter, Bicep default).
PARAMETER_SETTINGS: dict[str, tuple[str, Any]] = {
    "MAILCHIMP_BASE_URL": ("mailchimpBaseUrl", ""),  # empty: derived from the key's data center
    "DATAVERSE_URL": ("dataverseUrl", None),  # required: no default
    "SYNC_LINKS": ("syncLinks", []),  # required by the app; deployable before the links are known
    "SYNC_SCHEDULE": ("syncSchedule", "0 */15 * * * *"),
    "FULL_RESYNC_HOURS": ("fullResyncHours", 24),
    "RESUBSCRIBE_POLICY": ("resubscribePolicy", "never"),
    "NEW_MEMBER_STATUS": ("newMemberStatus", "subscribed"),
    "OPT_OUT_COLUMNS": ("optOutColumns", "donotbulkemail,donotsendmm"),
    "DATAVERSE_PREFIX": ("dataversePrefix", "cbr"),
    "SUBSCRIBER_STATUS_COLUMN": ("subscriberStatusColumn", "cbr_subscriberstatus"),
    "MAILCHIMP_MAX_CONNECTIONS": ("mailchimpMaxConnections", 8),
    "BATCH_SIZE": ("batchSize", 500),
}
# Settings after the first block of the contract table, and those the product adds beyond it, fed the same way.
PRODUCT_SETTINGS: dict[str, tuple[str, Any]] = {
    "ON_DYNAMICS_DELETE": ("onDynamicsDelete", "keep"),
    "SYNC_NOW_SCHEDULE": ("syncNowSchedule", "0 * * * * *"),
    "FIELD_MAP": (
        "fieldMap",
        [{"column": "firstname", "mergeField": "FNAME"}, {"column": "lastname", "mergeField": "LNAME"}],
    ),
}
# Contract settings whose Azure value comes from a deployed resource rather than a typed-in parameter.
RESOURCE_SETTINGS = {"AzureWebJobsStorage", "MAILCHIMP_API_KEY", "AZURE_CLIENT_ID"}

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


def site() -> t.Resource:
    (found,) = t.declared(FUNCTION_APP, "Microsoft.Web/sites")
    return found


def main_module_params(symbol: str) -> dict[str, Any]:
    return t.parse(t.MAIN)["modules"][symbol]["config"]["params"]


def setting_parameter(value: Any) -> str:
    """The module parameter an app setting's value is, directly or through string()."""
    if t.is_function(value, "string"):
        value = t.function_args(value)["value_to_convert"]
    assert isinstance(value, str) and value in t.parameters(FUNCTION_APP), (
        f"{value!r} is not a parameter of {FUNCTION_APP.name}"
    )
    return value


@pytest.mark.parametrize("path", t.bicep_files(), ids=lambda p: str(p.relative_to(t.INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = t.parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


def test_main_composes_every_module_and_passes_what_each_requires() -> None:
    modules = t.parse(t.MAIN)["modules"]
    used = {Path(entry["detail"]["path"]).stem for entry in modules.values()}
    assert used == {path.stem for path in t.MODULES.glob("*.bicep")}, "a module is unused or missing"
    for symbol, entry in modules.items():
        target = t.INFRA / entry["detail"]["path"]
        declared = t.parameters(target)
        passed = entry["config"]["params"]
        unknown = set(passed) - set(declared)
        assert not unknown, f"module {symbol} is passed parameters it does not declare: {sorted(unknown)}"
        required = {name for name in declared if not _has_default(target, name)}
        missing = required - set(passed)
        assert not missing, f"module {symbol} misses required parameters {sorted(missing)}"


def _has_default(path: Path, name: str) -> bool:
    # pycep reports both "no default" and "default null" as None; the source text tells them apart.
    return re.search(rf"^param {name} \S+ =", path.read_text(encoding="utf-8"), re.MULTILINE) is not None


@pytest.mark.parametrize("path", t.bicep_files(), ids=lambda p: str(p.relative_to(t.INFRA)))
def test_every_parameter_has_a_description(path: Path) -> None:
    undescribed = [name for name, param in t.parameters(path).items() if not t.decorators(param).get("description")]
    assert not undescribed, f"{path.name}: parameters without @description: {undescribed}"


def test_no_storage_account_allows_shared_keys_or_weak_transport() -> None:
    accounts = t.all_declared("Microsoft.Storage/storageAccounts")
    assert accounts, "no storage account declared"
    for account in accounts:
        properties = account.body["properties"]
        assert properties["allowSharedKeyAccess"] is False, f"{account.symbol} allows shared key access"
        assert properties["allowBlobPublicAccess"] is False
        assert properties["supportsHttpsTrafficOnly"] is True
        assert properties["minimumTlsVersion"] == "TLS1_2"
        assert properties.get("defaultToOAuthAuthentication") is True


def test_contract_queues_and_tables_are_created() -> None:
    storage = t.module_path("storage")
    values = t.variables(storage)
    assert values["queueNames"]["value"] == [
        "sync-links",
        "sync-links-poison",
        "sync-batches",
        "sync-batches-poison",
        "sync-events",
        "sync-events-poison",
    ]
    assert values["tableNames"]["value"] == ["SyncState", "IdentityMap", "SyncRuns", "ConsentAudit"]
    (container,) = t.declared(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container.body["properties"]["publicAccess"] == "None"


def test_every_role_assignment_is_named_by_guid_of_scope_principal_and_role() -> None:
    assignments = t.all_declared("Microsoft.Authorization/roleAssignments")
    assert len(assignments) >= len(ROLE_IDS)
    for assignment in assignments:
        name, properties = assignment.body["name"], assignment.body["properties"]
        assert t.is_function(name, "guid"), f"{assignment.symbol}: name is not guid(...)"
        args = list(t.function_args(name).values())
        assert len([a for a in args if a is not None]) == 3, f"{assignment.symbol}: guid() needs scope, principal, role"
        assert t.property_path(args[0]) == [assignment.body["scope"], "id"], (
            f"{assignment.symbol}: first guid() part is not the scope id"
        )
        assert args[1] == properties["principalId"], f"{assignment.symbol}: second guid() part is not the principal"
        assert args[2] == properties["roleDefinitionId"], f"{assignment.symbol}: third guid() part is not the role"


def test_app_identity_holds_exactly_the_roles_it_needs_at_the_documented_scopes() -> None:
    roles = t.module_path("roles")
    role_of_variable = {
        name: t.function_args(var["value"])["resource_name_1"]
        for name, var in t.variables(roles).items()
        if t.is_function(var["value"], "subscription_resource_id")
    }
    scope_type = {r.symbol: r.type for r in t.resources(roles) if r.existing}
    granted = {
        (role_of_variable[a.body["properties"]["roleDefinitionId"]], scope_type[a.body["scope"]])
        for a in t.declared(roles, "Microsoft.Authorization/roleAssignments")
        if a.body["properties"]["principalId"] == "appPrincipalId"
    }
    assert granted == {
        (ROLE_IDS["Storage Blob Data Owner"], "Microsoft.Storage/storageAccounts"),
        (ROLE_IDS["Storage Queue Data Contributor"], "Microsoft.Storage/storageAccounts"),
        (ROLE_IDS["Storage Table Data Contributor"], "Microsoft.Storage/storageAccounts"),
        (ROLE_IDS["Key Vault Secrets User"], "Microsoft.KeyVault/vaults"),
        (ROLE_IDS["Monitoring Metrics Publisher"], "Microsoft.Insights/components"),
    }
    operator_grants = [
        a
        for a in t.declared(roles, "Microsoft.Authorization/roleAssignments")
        if a.body["properties"]["principalId"] == "operatorPrincipalId"
    ]
    assert operator_grants and all(a.conditional for a in operator_grants), "operator roles must be optional"
    # The function app waits for its roles: its Key Vault reference and host storage need them at start.
    assert "roles" in t.parse(t.MAIN)["modules"]["functionApp"]["config"]["dependsOn"]


def test_function_app_is_https_only_with_ftps_off_tls12_and_no_remote_debugging() -> None:
    properties = site().body["properties"]
    config = properties["siteConfig"]
    assert properties["httpsOnly"] is True
    assert config["ftpsState"] == "Disabled"
    assert float(config["minTlsVersion"]) >= 1.2
    assert float(config["scmMinTlsVersion"]) >= 1.2
    assert config["remoteDebuggingEnabled"] is False
    policies = t.declared(FUNCTION_APP, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p.body["name"]: p.body["properties"]["allow"] for p in policies} == {"ftp": False, "scm": False}


def test_function_app_runs_python_311_on_flex_consumption_as_the_user_assigned_identity() -> None:
    (plan,) = t.declared(FUNCTION_APP, "Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan.body["properties"]["reserved"] is True  # Linux
    body = site().body
    assert body["kind"] == "functionapp,linux"
    assert body["identity"]["type"] == "UserAssigned"
    assert list(body["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    properties = body["properties"]
    assert properties["keyVaultReferenceIdentity"] == "identityId"
    config = properties["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "deploymentContainerUrl"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert config["scaleAndConcurrency"] == {
        "maximumInstanceCount": "maximumInstanceCount",
        "instanceMemoryMB": "instanceMemoryMB",
    }
    assert main_module_params("storage")["deploymentContainerName"] == "deploymentContainerName"
    assert t.parameters(t.MAIN)["maximumInstanceCount"]["default"] == 40
    assert "azd-service-name" in json.dumps(body["tags"]), "azd finds the app by its azd-service-name tag"


def test_host_storage_and_telemetry_use_the_identity_not_keys() -> None:
    settings = t.app_settings(site())
    assert "AzureWebJobsStorage" not in settings, "a plain AzureWebJobsStorage is a connection string"
    assert settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "blobEndpoint"
    assert settings["AzureWebJobsStorage__queueServiceUri"] == "queueEndpoint"
    assert settings["AzureWebJobsStorage__tableServiceUri"] == "tableEndpoint"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert "APPINSIGHTS_INSTRUMENTATIONKEY" not in settings
    passed = main_module_params("functionApp")
    assert t.property_path(passed["identityClientId"]) == ["identity", "outputs", "clientId"]
    assert t.property_path(passed["storageAccountName"]) == ["storage", "outputs", "name"]
    # The connection string carries the component's key, which authorizes nothing once local auth is off.
    (component,) = t.all_declared("Microsoft.Insights/components")
    assert component.body["properties"]["DisableLocalAuth"] is True
    (workspace,) = t.all_declared("Microsoft.OperationalInsights/workspaces")
    assert workspace.body["properties"]["features"]["disableLocalAuth"] is True


def test_mailchimp_key_reaches_the_app_only_as_a_versionless_key_vault_reference() -> None:
    settings = t.app_settings(site())
    assert settings["MAILCHIMP_API_KEY"] == "@Microsoft.KeyVault(SecretUri=${mailchimpSecretUri})"
    assert t.property_path(main_module_params("functionApp")["mailchimpSecretUri"]) == [
        "keyVault",
        "outputs",
        "mailchimpSecretUri",
    ]
    keyvault = t.module_path("keyvault")
    outputs = t.parse(keyvault)["outputs"]
    assert outputs["mailchimpSecretUri"]["value"] == "${vault.properties.vaultUri}secrets/${mailchimpSecretName}/"
    (secret,) = [s for s in t.declared(keyvault, "Microsoft.KeyVault/vaults/secrets") if s.symbol == "mailchimpSecret"]
    assert secret.body["properties"]["value"] == "mailchimpApiKey"
    assert secret.conditional, "an empty key parameter must not overwrite the secret on redeploy"
    assert "secure" in t.decorators(t.parameters(keyvault)["mailchimpApiKey"])
    assert "secure" in t.decorators(t.parameters(t.MAIN)["mailchimpApiKey"])
    # The secure parameter flows to the vault module and nowhere else.
    main_text = t.MAIN.read_text(encoding="utf-8")
    assert len(re.findall(r"\bmailchimpApiKey\b", main_text)) == 3, "declared once, passed once as name: value"
    assert main_module_params("keyVault")["mailchimpApiKey"] == "mailchimpApiKey"
    for symbol, entry in t.parse(t.MAIN)["modules"].items():
        if symbol != "keyVault":
            assert "mailchimpApiKey" not in set(t.strings(entry["config"]["params"])), symbol


@pytest.mark.parametrize("path", t.bicep_files(), ids=lambda p: str(p.relative_to(t.INFRA)))
def test_no_template_builds_a_key_based_connection_string_or_reads_keys(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in ("AccountKey=", "InstrumentationKey=", "SharedAccessSignature=", "DefaultEndpointsProtocol"):
        assert not any(pattern in s for s in t.strings(t.parse(path))), f"{path.name} contains {pattern}"
    assert not re.search(r"\blist(Keys|ConnectionStrings|AccountSas|ServiceSas|Secrets)\s*\(", text, re.I), (
        f"{path.name} reads keys with a list*() function"
    )
    assert not any(name.startswith("list") for name in t.function_names(t.parse(path)))
    for name, output in (t.parse(path).get("outputs") or {}).items():
        assert "mailchimpApiKey" not in set(t.strings(output)), f"{path.name} outputs the key as {name}"


def test_no_plain_app_setting_carries_a_secret() -> None:
    secure = {name for name, p in t.parameters(FUNCTION_APP).items() if "secure" in t.decorators(p)}
    assert not secure, "the function app module takes no secret; the key arrives as a Key Vault reference"
    for name, value in t.app_settings(site()).items():
        for text in t.strings(value):
            assert not re.search(
                r"(AccountKey|InstrumentationKey|SharedAccessSignature|password|secret)=", text, re.I
            ), f"app setting {name} looks like it carries a secret"
        if name not in ("MAILCHIMP_API_KEY", "WEBHOOK_SECRET"):
            assert "@Microsoft.KeyVault" not in json.dumps(value)


def test_every_contract_setting_is_an_app_setting_driven_by_a_parameter_with_the_design_default() -> None:
    settings = t.app_settings(site())
    module_params = t.parameters(FUNCTION_APP)
    main_params = t.parameters(t.MAIN)
    passed = main_module_params("functionApp")
    file_values = json.loads(t.PARAMETERS.read_text(encoding="utf-8"))["parameters"]
    for setting, (parameter, default) in {**PARAMETER_SETTINGS, **PRODUCT_SETTINGS}.items():
        assert setting in settings, f"{setting} is not an app setting"
        module_param = setting_parameter(settings[setting])
        assert passed[module_param] == parameter, (
            f"{setting}: main.bicep passes {passed[module_param]!r}, not {parameter}"
        )
        assert parameter in main_params, f"{setting}: main.bicep has no parameter {parameter}"
        assert main_params[parameter]["default"] == default, f"{setting}: default of {parameter} is not {default!r}"
        if default is not None:
            assert module_params[module_param]["default"] == default, f"{setting}: module default differs"
            assert _has_default(t.MAIN, parameter)
        else:
            assert not _has_default(t.MAIN, parameter), f"{setting} is required and must have no default"
        if parameter in file_values and not str(file_values[parameter]["value"]).startswith("${"):
            assert file_values[parameter]["value"] == default, f"main.parameters.json sets {parameter} off default"
    contract = set(PARAMETER_SETTINGS) | RESOURCE_SETTINGS
    assert contract - {"AzureWebJobsStorage"} <= set(settings)


def test_the_embedded_contract_table_matches_design_md() -> None:
    design = t.REPO.parent / "shared" / "design.md"
    assert design.is_file(), f"{design} not found: the team guides sit beside the repository"
    rows = re.findall(r"^\| `([A-Za-z_]+)` \| (.+?) \|", design.read_text(encoding="utf-8"), re.MULTILINE)
    section = dict(rows[: rows.index(next(r for r in rows if r[0] == "BATCH_SIZE")) + 1])
    assert set(section) == set(PARAMETER_SETTINGS) | RESOURCE_SETTINGS
    for setting, (_, default) in PARAMETER_SETTINGS.items():
        written = section[setting].strip()
        if written.startswith("`") and "<" not in written:
            assert str(default) == written.strip("`"), f"{setting}: design.md says {written}, infra uses {default!r}"


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection() -> None:
    (vault,) = t.all_declared("Microsoft.KeyVault/vaults")
    properties = vault.body["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties


def test_alert_rules_watch_app_insights_and_notify_the_action_group() -> None:
    alerts = t.module_path("alerts")
    rules = t.declared(alerts, "Microsoft.Insights/scheduledQueryRules")
    assert {r.symbol for r in rules} == {
        "poisonAlert",
        "failureAlert",
        "staleAlert",
        "throttleAlert",
        "silentWebhooksAlert",
    }
    for rule in rules:
        properties = rule.body["properties"]
        assert properties["scopes"] == ["appInsightsId"]
        assert properties["actions"]["actionGroups"] == ["notify"]
        assert properties["enabled"] is True
    stale = t.variables(alerts)["staleQuery"]["value"]
    assert t.is_function(stale, "replace")
    assert t.function_args(stale)["old_string"] == "__LINKS__"
    assert t.function_args(stale)["new_string"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "syncLinks"}}
    }
    inner = t.variables(alerts)[t.function_args(stale)["original_string"]]["value"]
    assert t.is_function(inner, "replace") and t.function_args(inner)["old_string"] == "__STALE_AFTER__"
    assert "__STALE_AFTER__" in t.variables(alerts)["staleQueryTemplate"]["value"]
    assert "__LINKS__" in t.variables(alerts)["staleQueryTemplate"]["value"]
    assert main_module_params("alerts")["expectedRunIntervalMinutes"] == "expectedRunIntervalMinutes"
    assert main_module_params("alerts")["syncLinks"] == "syncLinks", "the alert knows the deployed links"
    (poison,) = [r for r in rules if r.symbol == "poisonAlert"]
    dimensions = [d["name"] for d in poison.body["properties"]["criteria"]["allOf"][0]["dimensions"]]
    assert dimensions == ["link", "stage"], "dead-lettered scans and batches alert apart, per link"
    (group,) = t.declared(alerts, "Microsoft.Insights/actionGroups")
    assert group.conditional, "an existing action group can be passed instead"


def test_workbook_loads_its_json_and_points_it_at_the_component() -> None:
    (workbook,) = t.declared(t.module_path("workbook"), "Microsoft.Insights/workbooks")
    data = workbook.body["properties"]["serializedData"]
    assert t.is_function(data, "replace")
    loaded = t.function_args(data)["original_string"]
    assert t.is_function(loaded, "load_text_content")
    assert (t.MODULES / t.function_args(loaded)["file_path"]).resolve() == t.WORKBOOK
    assert t.function_args(data)["old_string"] == "__APP_INSIGHTS_ID__"
    content = t.workbook()
    assert content["version"] == "Notebook/1.0"
    assert content["fallbackResourceIds"] == ["__APP_INSIGHTS_ID__"]


def test_azd_project_deploys_this_folder_as_a_python_function() -> None:
    text = (t.REPO / "azure.yaml").read_text(encoding="utf-8")
    services = text[text.index("\nservices:") :]
    api = re.search(r"\n  api:\n((?:    .+\n)+)", services)
    assert api, "azure.yaml has no service 'api'"
    fields = dict(re.findall(r"^    (\w+): (.+)$", api.group(1), re.MULTILINE))
    assert fields == {"project": ".", "language": "python", "host": "function"}
    assert re.search(r"^  path: infra$", text, re.MULTILINE)


def test_parameters_file_names_only_declared_parameters() -> None:
    values = json.loads(t.PARAMETERS.read_text(encoding="utf-8"))["parameters"]
    declared = t.parameters(t.MAIN)
    assert set(values) <= set(declared), f"unknown parameters: {sorted(set(values) - set(declared))}"
    required = {name for name in declared if not _has_default(t.MAIN, name)}
    assert required <= set(values), f"required parameters without a value: {sorted(required - set(values))}"
    assert "mailchimpApiKey" not in values, "the key is set in Key Vault, never written to a parameters file"


def test_deploy_guide_lists_every_parameter_setting_with_its_default() -> None:
    guide = (t.REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for setting, (parameter, default) in {**PARAMETER_SETTINGS, **PRODUCT_SETTINGS}.items():
        row = re.search(rf"^\| `{parameter}`[^|]*\| `{setting}`[^|]*\| (.+?) \|$", guide, re.MULTILINE)
        assert row, f"docs/deploy.md has no settings row for {parameter} -> {setting}"
        if isinstance(default, list) and default:  # a JSON setting: its default as the app reads it
            assert f"`{json.dumps(default, separators=(',', ':'))}`" in row.group(1)
        elif default not in (None, "", []):
            assert f"`{default}`" in row.group(1), f"docs/deploy.md gives {setting} a default other than {default!r}"


# azd fills ${NAME} and ${NAME=default} in main.parameters.json from the environment (unset: the default, or empty).
AZD_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:=([^}]*))?\}")
AZD_ENVIRONMENT = {
    "AZURE_ENV_NAME": "consent-dev",
    "AZURE_LOCATION": "westeurope",
    "AZURE_PRINCIPAL_ID": "00000000-0000-0000-0000-000000000001",
    "DATAVERSE_URL": "https://contoso.crm4.dynamics.com",
    "ALERT_EMAIL": "",
}


def azd_parameters(environment: dict[str, str]) -> dict[str, Any]:
    """main.parameters.json as azd hands it to the deployment, for the given azd environment."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return AZD_REFERENCE.sub(lambda m: environment.get(m.group(1), m.group(2) or ""), value)
        return value

    values = json.loads(t.PARAMETERS.read_text(encoding="utf-8"))["parameters"]
    return {name: fill(entry["value"]) for name, entry in values.items()}


def test_operator_principal_type_follows_the_principal_azd_is_signed_in_as() -> None:
    assert azd_parameters(AZD_ENVIRONMENT)["operatorPrincipalType"] == "User"
    signed_in_as_app = AZD_ENVIRONMENT | {"AZURE_PRINCIPAL_TYPE": "ServicePrincipal"}
    assert azd_parameters(signed_in_as_app)["operatorPrincipalType"] == "ServicePrincipal"
    passed = main_module_params("roles")
    assert passed["operatorPrincipalType"] == "operatorPrincipalType"
    assert passed["operatorPrincipalId"] == "operatorPrincipalId"


@pytest.mark.parametrize("principal_type", ["User", "ServicePrincipal", None])
def test_every_value_azd_passes_meets_its_parameter_constraints(principal_type: str | None) -> None:
    environment = dict(AZD_ENVIRONMENT)
    if principal_type is not None:
        environment["AZURE_PRINCIPAL_TYPE"] = principal_type
    declared = t.parameters(t.MAIN)
    for name, value in azd_parameters(environment).items():
        rules = t.decorators(declared[name])
        if "allowed" in rules:
            assert value in rules["allowed"], f"{name}={value!r} is not one of {rules['allowed']}"
        if "min_value" in rules:
            assert value >= rules["min_value"], f"{name}={value!r} is below @minValue({rules['min_value']})"
        if "max_value" in rules:
            assert value <= rules["max_value"], f"{name}={value!r} is above @maxValue({rules['max_value']})"
        if "min_length" in rules:
            assert len(value) >= rules["min_length"], f"{name} is shorter than @minLength({rules['min_length']})"
        if "max_length" in rules:
            assert len(value) <= rules["max_length"], f"{name} is longer than @maxLength({rules['max_length']})"


def test_maximum_instance_count_is_held_to_what_flex_consumption_accepts() -> None:
    # Flex Consumption refuses a maximum instance count below 40 or above 1000.
    for path in (t.MAIN, FUNCTION_APP):
        param = t.parameters(path)["maximumInstanceCount"]
        rules = t.decorators(param)
        assert (rules.get("min_value"), rules.get("max_value")) == (40, 1000), f"{path.name}: {rules}"
        assert 40 <= param["default"] <= 1000


def _diagnostic_setting(module: str, symbol: str, scope_type: str) -> t.Resource:
    """The module's one diagnostic setting on a resource of scope_type, sending to the workspace main.bicep passes."""
    path = t.module_path(module)
    scope_of = {r.symbol: r.type for r in t.resources(path)}
    (setting,) = [
        r
        for r in t.declared(path, "Microsoft.Insights/diagnosticSettings")
        if scope_of.get(r.body.get("scope")) == scope_type
    ]
    assert setting.body["properties"]["workspaceId"] == "workspaceId"
    assert t.property_path(main_module_params(symbol)["workspaceId"]) == [
        "monitoring",
        "outputs",
        "workspaceId",
    ]
    return setting


def _enabled_categories(setting: t.Resource) -> set[str]:
    return {log["category"] for log in setting.body["properties"]["logs"] if log["enabled"] is True}


def test_every_secret_read_reaches_log_analytics() -> None:
    vault_log = _diagnostic_setting("keyvault", "keyVault", "Microsoft.KeyVault/vaults")
    assert "AuditEvent" in _enabled_categories(vault_log)


def test_every_table_access_reaches_log_analytics() -> None:
    # ConsentAudit is the consent history: who read, wrote or deleted its entities is kept beside it.
    table_log = _diagnostic_setting("storage", "storage", "Microsoft.Storage/storageAccounts/tableServices")
    assert {"StorageRead", "StorageWrite", "StorageDelete"} <= _enabled_categories(table_log)


# The newest generally available API version of each resource type the templates use (Microsoft's Bicep type
# index; diagnostic settings have no GA version newer than 2021-05-01-preview, which every Azure template uses).
NEWEST_GA = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.Storage": "2025-06-01",
    "Microsoft.KeyVault": "2026-05-15",
    "Microsoft.Web": "2025-03-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    "Microsoft.OperationalInsights/workspaces": "2026-03-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/actionGroups": "2023-01-01",
    "Microsoft.Insights/scheduledQueryRules": "2023-12-01",
    "Microsoft.Insights/workbooks": "2023-06-01",
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
}
API_VERSION = re.compile(r"^resource \w+ '([A-Za-z.]+/[A-Za-z/]+)@([0-9a-z-]+)'", re.MULTILINE)


@pytest.mark.parametrize("path", t.bicep_files(), ids=lambda p: str(p.relative_to(t.INFRA)))
def test_every_resource_uses_the_newest_ga_api_version(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = API_VERSION.findall(text)
    assert found or "module " in text
    for type_, version in found:
        (newest,) = [
            v for k, v in NEWEST_GA.items() if type_ == k or type_.startswith(k + "/") or k == type_.split("/")[0]
        ]
        assert version == newest, f"{path.name}: {type_}@{version}, the newest GA version is {newest}"
