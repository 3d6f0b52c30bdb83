// The storage account of the Functions host and of the product: deployment package, queues and tables.
// Reached only with Entra ID (shared keys off), over HTTPS with TLS 1.2.

@description('Name of the storage account (3 to 24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the storage account.')
param location string = resourceGroup().location

@description('Tags applied to the storage account.')
param tags object = {}

@description('Blob container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Resource id of the Log Analytics workspace that receives the access log of the table service (ConsentAudit is the consent history).')
param workspaceId string

@description('Replication of the account; geo-redundant by default because ConsentAudit is the consent history.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

// Storage names (contract): the product's queues, their poison queues, and its tables.
var queueNames = [
  'sync-links'
  'sync-links-poison'
  'sync-batches'
  'sync-batches-poison'
  'sync-events'
  'sync-events-poison'
]
var tableNames = [
  'SyncState'
  'IdentityMap'
  'SyncRuns'
  'ConsentAudit'
]

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' = {
  // checkov:skip=CKV_AZURE_35: the Flex app is not VNet-integrated, so it reaches storage over the public endpoint; every request needs an Entra ID token (shared keys are off)
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; closing the public endpoint needs VNet integration and private endpoints (docs/deploy.md, hardening)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-06-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-06-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-06-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-06-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-06-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

// Who read, wrote or deleted table entities (ConsentAudit among them), in the workspace's StorageTableLogs table.
resource tableAccessLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'table-access-to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
