// The Function App on the Flex Consumption plan (Linux, Python 3.11), running as the user-assigned identity.
// Every contract setting of the product is an app setting fed by a parameter; the Mailchimp key is a Key Vault reference.

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the plan and the app; the region must offer Flex Consumption.')
param location string = resourceGroup().location

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client (application) id of that identity.')
param identityClientId string

@description('Name of the storage account behind AzureWebJobsStorage.')
param storageAccountName string

@description('Blob endpoint of that account.')
param blobEndpoint string

@description('Queue endpoint of that account.')
param queueEndpoint string

@description('Table endpoint of that account.')
param tableEndpoint string

@description('URL of the blob container the plan deploys the app package from.')
param deploymentContainerUrl string

@description('Application Insights connection string (ingestion needs the identity\'s Entra ID token).')
param appInsightsConnectionString string

@description('Versionless URI of the Key Vault secret that holds the Mailchimp API key.')
param mailchimpSecretUri string

@description('Versionless URI of the Key Vault secret that holds WEBHOOK_SECRET.')
param webhookSecretUri string

@description('PUBLIC_BASE_URL; empty: https://<name>.azurewebsites.net, the app\'s own host name.')
param publicBaseUrl string = ''

@description('Most instances per function the plan may run: 40 to 1000 (the plan refuses a maximum below 40).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance; CPU and network scale with it.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('MAILCHIMP_BASE_URL: API root override; empty derives https://<dc>.api.mailchimp.com/3.0 from the key.')
param mailchimpBaseUrl string = ''

@description('DATAVERSE_URL: the Dataverse environment URL, e.g. https://contoso.crm4.dynamics.com.')
param dataverseUrl string

@description('SYNC_LINKS: the links, each {name, marketingListId, audienceId, tag?}.')
param syncLinks array = []

@description('SYNC_SCHEDULE: NCRONTAB of the timer.')
param syncSchedule string = '0 */15 * * * *'

@description('SYNC_NOW_SCHEDULE: NCRONTAB of the sync-now check.')
param syncNowSchedule string = '0 * * * * *'

@description('FIELD_MAP: the mapped fields, each {column, mergeField, direction?, kinds?}.')
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

@description('ON_DYNAMICS_DELETE: keep, archive or forget the member when the last record holding its address is deleted.')
@allowed([
  'keep'
  'archive'
  'forget'
])
param onDynamicsDelete string = 'keep'

@description('OPT_OUT_ROLLUP: all or any; how per-audience statuses roll up into the opt-out columns.')
@allowed([
  'all'
  'any'
])
param optOutRollup string = 'all'

@description('FULL_RESYNC_HOURS: a run becomes a full pass when the last one is older than this.')
param fullResyncHours int = 24

@description('RESUBSCRIBE_POLICY: never, or confirm (set pending so Mailchimp asks the person).')
@allowed([
  'never'
  'confirm'
])
param resubscribePolicy string = 'never'

@description('NEW_MEMBER_STATUS: status of records added to Mailchimp.')
@allowed([
  'subscribed'
  'pending'
])
param newMemberStatus string = 'subscribed'

@description('OPT_OUT_COLUMNS: Dataverse boolean columns that mean opted out when true, comma-separated.')
param optOutColumns string = 'donotbulkemail,donotsendmm'

@description('DATAVERSE_PREFIX: publisher prefix of the custom columns and tables.')
param dataversePrefix string = 'cbr'

@description('SUBSCRIBER_STATUS_COLUMN: choice column written on contact, lead and account; empty disables it.')
param subscriberStatusColumn string = 'cbr_subscriberstatus'

@description('MAILCHIMP_MAX_CONNECTIONS: concurrent Mailchimp requests across all instances.')
@minValue(1)
@maxValue(10)
param mailchimpMaxConnections int = 8

@description('DATAVERSE_MAX_PARALLEL: most Dataverse writes one instance keeps in flight.')
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

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy of Flex Consumption is limited to some regions; a run interrupted by a zone outage resumes from its watermarks on the next tick
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2025-03-01' = {
  // checkov:skip=CKV_AZURE_222: POST /api/sync (function key) and azd deployments need the public endpoint; a private endpoint needs a VNet this template does not create
  // checkov:skip=CKV_AZURE_17: client certificates would break POST /api/sync for the operators who start a run; the endpoint takes a function key over HTTPS
  // checkov:skip=CKV_AZURE_212: the sync is a scheduled batch; Flex Consumption starts instances on demand and a missed tick is caught up by the next one
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no health check setting; failed invocations alert through Application Insights instead
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      remoteDebuggingEnabled: false
      http20Enabled: true
      appSettings: [
        // Host storage by identity: no connection string, no account key.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD;ClientId=${identityClientId}'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'MAILCHIMP_API_KEY'
          value: '@Microsoft.KeyVault(SecretUri=${mailchimpSecretUri})'
        }
        {
          name: 'WEBHOOK_SECRET'
          value: '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
        }
        {
          name: 'PUBLIC_BASE_URL'
          value: empty(publicBaseUrl) ? 'https://${name}.azurewebsites.net' : publicBaseUrl
        }
        {
          name: 'MAILCHIMP_BASE_URL'
          value: mailchimpBaseUrl
        }
        {
          name: 'DATAVERSE_URL'
          value: dataverseUrl
        }
        {
          name: 'SYNC_LINKS'
          value: string(syncLinks)
        }
        {
          name: 'SYNC_SCHEDULE'
          value: syncSchedule
        }
        {
          name: 'SYNC_NOW_SCHEDULE'
          value: syncNowSchedule
        }
        {
          name: 'ON_DYNAMICS_DELETE'
          value: onDynamicsDelete
        }
        {
          name: 'OPT_OUT_ROLLUP'
          value: optOutRollup
        }
        {
          name: 'FIELD_MAP'
          value: string(fieldMap)
        }
        {
          name: 'FULL_RESYNC_HOURS'
          value: string(fullResyncHours)
        }
        {
          name: 'RESUBSCRIBE_POLICY'
          value: resubscribePolicy
        }
        {
          name: 'NEW_MEMBER_STATUS'
          value: newMemberStatus
        }
        {
          name: 'OPT_OUT_COLUMNS'
          value: optOutColumns
        }
        {
          name: 'DATAVERSE_PREFIX'
          value: dataversePrefix
        }
        {
          name: 'SUBSCRIBER_STATUS_COLUMN'
          value: subscriberStatusColumn
        }
        {
          name: 'MAILCHIMP_MAX_CONNECTIONS'
          value: string(mailchimpMaxConnections)
        }
        {
          name: 'DATAVERSE_MAX_PARALLEL'
          value: string(dataverseMaxParallel)
        }
        {
          name: 'BATCH_SIZE'
          value: string(batchSize)
        }
        {
          name: 'CAMPAIGN_ACTIVITY_DAYS'
          value: string(campaignActivityDays)
        }
        {
          name: 'RECONCILE_MAX_EMAILS'
          value: string(reconcileMaxEmails)
        }
      ]
    }
  }
}

// Deployments authenticate with Entra ID; publishing user names and passwords stay off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
