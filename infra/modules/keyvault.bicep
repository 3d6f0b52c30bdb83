// Key Vault holding the Mailchimp API key. Access is by Azure RBAC only; deleted secrets and the vault stay recoverable.

@description('Name of the Key Vault (3 to 24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the vault.')
param location string = resourceGroup().location

@description('Tags applied to the vault.')
param tags object = {}

@description('Name of the secret that holds the Mailchimp API key.')
param mailchimpSecretName string = 'mailchimp-api-key'

@secure()
@description('Mailchimp API key (<key>-<dc>). Empty leaves the secret as it is, so a redeploy never blanks a key set with az keyvault secret set.')
param mailchimpApiKey string = ''

@description('Name of the secret that holds WEBHOOK_SECRET, the shared secret of the webhook routes.')
param webhookSecretName string = 'webhook-secret'

@secure()
@description('WEBHOOK_SECRET (32 or more characters). Empty leaves the secret as it is.')
param webhookSecret string = ''

@description('Resource id of the Log Analytics workspace that receives the audit log of the vault (every secret read).')
param workspaceId string

@description('Days a deleted vault or secret can be recovered (7 to 90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2026-05-15' = {
  // checkov:skip=CKV_AZURE_109: the platform resolves the app's Key Vault reference over the public endpoint unless the app is VNet-integrated, and App Service is not a trusted service for the vault firewall; access is RBAC-only
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource mailchimpSecret 'Microsoft.KeyVault/vaults/secrets@2026-05-15' = if (!empty(mailchimpApiKey)) {
  // checkov:skip=CKV_AZURE_41: a Mailchimp key has no expiry; a vault expiry date would stop every sync on that date without the key having changed
  // checkov:skip=CKV_AZURE_114: contentType is set below; the check cannot read the properties of a conditional resource
  parent: vault
  name: mailchimpSecretName
  properties: {
    value: mailchimpApiKey
    contentType: 'Mailchimp API key <key>-<dc>'
    attributes: {
      enabled: true
    }
  }
}

resource webhookSecretEntry 'Microsoft.KeyVault/vaults/secrets@2026-05-15' = if (!empty(webhookSecret)) {
  // checkov:skip=CKV_AZURE_41: the webhook secret is rotated by a deployment and `webhooks register`, not by a date; an expiry would silence the webhooks on that date
  // checkov:skip=CKV_AZURE_114: contentType is set below; the check cannot read the properties of a conditional resource
  parent: vault
  name: webhookSecretName
  properties: {
    value: webhookSecret
    contentType: 'WEBHOOK_SECRET of the webhook routes'
    attributes: {
      enabled: true
    }
  }
}

// Every read of the Mailchimp key (and every other data-plane call) lands in the workspace's AzureDiagnostics table.
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
// Versionless (and with the trailing slash) so the app setting follows every new version of the secret.
output mailchimpSecretUri string = '${vault.properties.vaultUri}secrets/${mailchimpSecretName}/'
output webhookSecretUri string = '${vault.properties.vaultUri}secrets/${webhookSecretName}/'
