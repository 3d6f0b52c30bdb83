// The Azure Monitor workbook: runs, changes by rule, skips and errors per link over time.
// Its content lives in ../workbook.json; the component id is filled in at deployment.

@description('Resource id of the Application Insights component the workbook queries.')
param appInsightsId string

@description('Azure region of the workbook.')
param location string = resourceGroup().location

@description('Tags applied to the workbook.')
param tags object = {}

@description('Title shown in the portal.')
param displayName string = 'Consent Bridge'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'consent-bridge-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: replace(loadTextContent('../workbook.json'), '__APP_INSIGHTS_ID__', appInsightsId)
    version: 'Notebook/1.0'
  }
}

output id string = workbook.id
