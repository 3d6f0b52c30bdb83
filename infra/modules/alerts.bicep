// Alert rules on Application Insights. The product's events are log records whose message holds
// 'cbr-event {json}' (see shared/telemetry.py); each query parses that JSON into d.

@description('Resource id of the Application Insights component the rules query.')
param appInsightsId string

@description('Azure region of the alert rules.')
param location string = resourceGroup().location

@description('Tags applied to the rules and the action group.')
param tags object = {}

@description('Prefix of the rule names.')
param namePrefix string

@description('Resource id of an existing action group to notify; empty creates one for this app.')
param actionGroupId string = ''

@description('Email address the created action group notifies; empty creates it without receivers (add them in the portal).')
param alertEmail string = ''

@description('Minutes between two timer runs (must agree with SYNC_SCHEDULE); a link with no successful run for twice this long alerts.')
@minValue(1)
@maxValue(720)
param expectedRunIntervalMinutes int = 15

@description('SYNC_LINKS as deployed: every link named here alerts when it has no successful run, even if the app never logs a thing.')
param syncLinks array = []

@description('Seconds spent waiting on 429 responses within 30 minutes, in two windows in a row, that count as sustained throttling.')
@minValue(1)
param throttledSecondsThreshold int = 300

@description('Changes per link within two hours that scheduled runs found and no webhook announced, while no event was applied, that count as silent webhooks.')
@minValue(1)
param missedByWebhooksThreshold int = 5

var createActionGroup = empty(actionGroupId)
var emailReceivers = empty(alertEmail) ? [] : [
  {
    name: 'operator'
    emailAddress: alertEmail
    useCommonAlertSchema: true
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (createActionGroup) {
  name: '${namePrefix}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cbr-alerts'
    enabled: true
    emailReceivers: emailReceivers
  }
}

var notify = createActionGroup ? actionGroup.id : actionGroupId

// A scan or a batch reached its poison queue: the product's poison-queue functions log one dead_lettered event per
// scan or batch, named by stage. The host's own "MaxDequeueCount" line is not counted: it would count each twice.
var poisonQuery = '''
traces
| where message has "cbr-event"
| extend d = parse_json(extract(@"cbr-event ([{].*)", 1, message))
| where tostring(d.event) == "dead_lettered"
| summarize poisoned = count() by link = tostring(d.link), stage = tostring(d.stage)
'''

// Any function invocation that failed (an unhandled exception in a trigger).
var failureQuery = '''
requests
| where success == false
| summarize failures = count() by function_name = operation_Name
'''

// Every configured link (and any other link seen in the last two days) whose last successful run is older than twice
// the schedule, or that has none in the window: an app that never starts keeps alerting for every configured link.
var staleQueryTemplate = '''
let runs = traces
| where timestamp > ago(2d)
| where message has "cbr-event"
| extend d = parse_json(extract(@"cbr-event ([{].*)", 1, message))
| where tostring(d.event) in ("run_started", "run_finished", "run_skipped")
| summarize last_success = maxif(timestamp, tostring(d.event) == "run_finished" and tostring(d.outcome) == "succeeded") by link = tostring(d.link);
let configured = print links = dynamic(__LINKS__)
| mv-expand entry = links
| project link = tostring(entry.name);
configured
| union (runs | project link)
| distinct link
| join kind=leftouter runs on link
| where isnull(last_success) or last_success < ago(__STALE_AFTER__)
| project link, last_success
'''
var staleAfter = replace(staleQueryTemplate, '__STALE_AFTER__', '${expectedRunIntervalMinutes * 2}m')
// SYNC_LINKS as JSON is a KQL dynamic literal; the query takes each link's name from it.
var staleQuery = replace(staleAfter, '__LINKS__', string(syncLinks))

// Time spent waiting for Mailchimp or Dataverse to let requests through again.
var throttleQuery = '''
traces
| where message has "cbr-event"
| extend d = parse_json(extract(@"cbr-event ([{].*)", 1, message))
| where tostring(d.event) == "throttled"
| summarize waited = sum(todouble(d.wait_seconds)) by service = tostring(d.service), link = tostring(d.link)
'''

// Webhooks gone silent: scheduled scans of a link keep finding changes no real-time event announced, while no
// webhook delivery reached the app and no event was applied (a deleted or disabled webhook, a rotated secret not
// registered again, a stopped Dataverse step). The sweep still applies every change; only the latency is lost.
var silentWebhooksQuery = '''
traces
| where message has "cbr-event"
| extend d = parse_json(extract(@"cbr-event ([{].*)", 1, message))
| where tostring(d.event) in ("missed_by_webhooks", "events_applied", "webhook")
| summarize missed = sumif(toint(d.count), tostring(d.event) == "missed_by_webhooks"), heard = countif(tostring(d.event) == "events_applied" or (tostring(d.event) == "webhook" and tostring(d.delivery) == "accepted")) by link = tostring(d.link)
| where heard == 0
'''

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poison-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Consent Bridge: batch dead-lettered'
    description: 'A reconcile batch reached the poison queue; its emails are retried in the next run. See the workbook and ConsentAudit.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'poisoned'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'link'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'stage'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        notify
      ]
    }
  }
}

resource failureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-function-failures'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Consent Bridge: function failures'
    description: 'A function invocation failed. Open Application Insights > Failures for the exception.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: failureQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'function_name'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        notify
      ]
    }
  }
}

resource staleAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-link-not-synced'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Consent Bridge: link without a successful run'
    description: 'A link has had no successful run for twice the sync interval. Check the workbook for failed, partial or skipped runs.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: staleQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'link'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        notify
      ]
    }
  }
}

resource throttleAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-sustained-throttling'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Consent Bridge: sustained throttling'
    description: 'Mailchimp or Dataverse kept answering 429 for two windows in a row. Lower MAILCHIMP_MAX_CONNECTIONS or look for another integration using the same account.'
    severity: 3
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: throttleQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'waited'
          operator: 'GreaterThan'
          threshold: throttledSecondsThreshold
          dimensions: [
            {
              name: 'service'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 2
            minFailingPeriodsToAlert: 2
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        notify
      ]
    }
  }
}

resource silentWebhooksAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-silent-webhooks'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Consent Bridge: webhooks silent'
    description: 'Scheduled runs keep finding changes that no webhook announced and no event was applied. Run python -m shared.cli webhooks status, then webhooks register (docs/deploy.md, real-time path).'
    severity: 3
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT2H'
    criteria: {
      allOf: [
        {
          query: silentWebhooksQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'missed'
          operator: 'GreaterThan'
          threshold: missedByWebhooksThreshold
          dimensions: [
            {
              name: 'link'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        notify
      ]
    }
  }
}

output actionGroupId string = notify
