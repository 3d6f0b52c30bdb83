// Consent Bridge in the customer's subscription: one resource group with the Function App (Flex Consumption),
// its identity, storage, Key Vault, monitoring, alert rules and workbook. `azd up` deploys it; see docs/deploy.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group; empty uses rg-<environmentName>.')
param resourceGroupName string = ''

@secure()
@description('Mailchimp API key (<key>-<dc>) stored in Key Vault as MAILCHIMP_API_KEY; empty leaves the secret as it is (set it with az keyvault secret set instead).')
param mailchimpApiKey string = ''

@secure()
@description('WEBHOOK_SECRET of the webhook routes, stored in Key Vault; generated afresh by each deployment unless given (then run webhooks register, docs/deploy.md).')
param webhookSecret string = newGuid() // checkov:skip=CKV_AZURE_131: not hardcoded: newGuid() draws a new random secret at each deployment

@description('Changes per link within two hours that runs found and no webhook announced, with no event applied, that raise the webhooks silent alert.')
@minValue(1)
param missedByWebhooksThreshold int = 5

@description('PUBLIC_BASE_URL: the app\'s public root the webhooks are registered at; empty: https://<the function app\'s name>.azurewebsites.net.')
param publicBaseUrl string = ''

@description('MAILCHIMP_BASE_URL: API root override; empty derives https://<dc>.api.mailchimp.com/3.0 from the key.')
param mailchimpBaseUrl string = ''

@minLength(8)
@description('DATAVERSE_URL: the Dataverse environment URL, e.g. https://contoso.crm4.dynamics.com.')
param dataverseUrl string

@description('SYNC_LINKS: the links, each {"name", "marketingListId", "audienceId", "tag"?}; names are unique, [a-z0-9-]{1,40}.')
param syncLinks array = []

@description('SYNC_SCHEDULE: NCRONTAB of the timer (six fields, seconds first).')
param syncSchedule string = '0 */15 * * * *'

@description('SYNC_NOW_SCHEDULE: NCRONTAB of the check for links a Dynamics user asked to sync now (one Dataverse read for all links).')
param syncNowSchedule string = '0 * * * * *'

@description('ON_DYNAMICS_DELETE: what deleting the last record holding an address in Dynamics does to its member: keep, archive or forget.')
@allowed([
  'keep'
  'archive'
  'forget'
])
param onDynamicsDelete string = 'keep'

@description('OPT_OUT_ROLLUP: how a record\'s per-audience statuses roll up into the opt-out columns: all (opted out when every audience membership is) or any (when one is).')
@allowed([
  'all'
  'any'
])
param optOutRollup string = 'all'

@description('FIELD_MAP: Dataverse columns kept in step with Mailchimp merge fields, each {"column", "mergeField", "direction"?, "kinds"?}; default first and last name to FNAME and LNAME.')
param fieldMap array = [
  {
    column: 'firstname'
    mergeField: 'FNAME'
  }
  {
    column: 'lastname'
    mergeField: 'LNAME'
  }
]

@description('FULL_RESYNC_HOURS: a run becomes a full pass when the last full pass is older than this.')
@minValue(1)
param fullResyncHours int = 24

@description('RESUBSCRIBE_POLICY: never, or confirm (a Dynamics opt-in of an unsubscribed member sets pending so Mailchimp asks the person).')
@allowed([
  'never'
  'confirm'
])
param resubscribePolicy string = 'never'

@description('NEW_MEMBER_STATUS: status of records added to Mailchimp; pending means double opt-in.')
@allowed([
  'subscribed'
  'pending'
])
param newMemberStatus string = 'subscribed'

@description('OPT_OUT_COLUMNS: Dataverse boolean columns that mean opted out when true, comma-separated.')
param optOutColumns string = 'donotbulkemail,donotsendmm'

@description('DATAVERSE_PREFIX: publisher prefix of the custom columns and tables the product creates.')
param dataversePrefix string = 'cbr'

@description('SUBSCRIBER_STATUS_COLUMN: choice column written on contact, lead and account; empty disables it.')
param subscriberStatusColumn string = 'cbr_subscriberstatus'

@description('MAILCHIMP_MAX_CONNECTIONS: concurrent Mailchimp requests across all instances (Mailchimp allows 10 per user).')
@minValue(1)
@maxValue(10)
param mailchimpMaxConnections int = 8

@description('DATAVERSE_MAX_PARALLEL: most Dataverse writes one instance keeps in flight (the service\'s x-ms-dop-hint, at most this).')
@minValue(1)
@maxValue(52)
param dataverseMaxParallel int = 4

@description('BATCH_SIZE: emails per reconcile message.')
@minValue(1)
@maxValue(1000)
param batchSize int = 500

@description('CAMPAIGN_ACTIVITY_DAYS: days after a campaign is sent during which its activity keeps being read.')
@minValue(1)
@maxValue(180)
param campaignActivityDays int = 30

@description('RECONCILE_MAX_EMAILS: most emails one reconcile invocation takes on, from waiting batches of one run.')
@minValue(1)
@maxValue(20000)
param reconcileMaxEmails int = 5000

@description('Most instances per function the Flex Consumption plan may run: 40 to 1000 (the plan refuses a maximum below 40). The Mailchimp cap does not depend on it (docs/deploy.md).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Minutes between two timer runs; must agree with syncSchedule. A link with no successful run for twice this long alerts.')
@minValue(1)
@maxValue(720)
param expectedRunIntervalMinutes int = 15

@description('Resource id of an existing action group the alerts notify; empty creates one.')
param actionGroupId string = ''

@description('Email address the created action group notifies; empty adds no receiver.')
param alertEmail string = ''

@description('Object id of the person or group who sets the Mailchimp key and runs check, provision and status from a workstation; azd fills in the signed-in user.')
param operatorPrincipalId string = ''

@description('Kind of principal operatorPrincipalId is; azd fills in AZURE_PRINCIPAL_TYPE (ServicePrincipal when azd is signed in as one).')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'consent-bridge'
}
var functionAppName = 'func-cbr-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2025-04-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-cbr-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-cbr-${resourceToken}'
    appInsightsName: 'appi-cbr-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stcbr${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    workspaceId: monitoring.outputs.workspaceId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-cbr-${resourceToken}'
    location: location
    tags: tags
    mailchimpApiKey: mailchimpApiKey
    webhookSecret: webhookSecret
    workspaceId: monitoring.outputs.workspaceId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  // The app starts resolving its Key Vault reference and storage as soon as it exists: grant the roles first.
  dependsOn: [
    roles
  ]
  params: {
    name: functionAppName
    planName: 'plan-cbr-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    mailchimpSecretUri: keyVault.outputs.mailchimpSecretUri
    webhookSecretUri: keyVault.outputs.webhookSecretUri
    publicBaseUrl: publicBaseUrl
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    mailchimpBaseUrl: mailchimpBaseUrl
    dataverseUrl: dataverseUrl
    syncLinks: syncLinks
    syncSchedule: syncSchedule
    syncNowSchedule: syncNowSchedule
    onDynamicsDelete: onDynamicsDelete
    optOutRollup: optOutRollup
    fieldMap: fieldMap
    fullResyncHours: fullResyncHours
    resubscribePolicy: resubscribePolicy
    newMemberStatus: newMemberStatus
    optOutColumns: optOutColumns
    dataversePrefix: dataversePrefix
    subscriberStatusColumn: subscriberStatusColumn
    mailchimpMaxConnections: mailchimpMaxConnections
    dataverseMaxParallel: dataverseMaxParallel
    batchSize: batchSize
    campaignActivityDays: campaignActivityDays
    reconcileMaxEmails: reconcileMaxEmails
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    appInsightsId: monitoring.outputs.appInsightsId
    location: location
    tags: tags
    namePrefix: 'cbr-${resourceToken}'
    actionGroupId: actionGroupId
    alertEmail: alertEmail
    expectedRunIntervalMinutes: expectedRunIntervalMinutes
    syncLinks: syncLinks
    missedByWebhooksThreshold: missedByWebhooksThreshold
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    appInsightsId: monitoring.outputs.appInsightsId
    location: location
    tags: tags
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
