// aca-reconciler as its own Container App in the ops environment, with a git-sync sidecar that
// keeps the desired-state repository in a shared volume, a managed identity, probes on
// /healthz and /readyz, and the least-privilege role assignments that `aca-reconciler
// permissions` prints (deploy/permissions.json for the example tree).
//
//   az role definition create --role-definition <each role of deploy/permissions.json>
//   az deployment group create -g rg-ops -f deploy/bicep/main.bicep -p @params.json
//
// Every parameter is described in docs/operations.md (a test checks that they agree).

targetScope = 'resourceGroup'

@description('Name of the Container App that runs aca-reconciler.')
param name string = 'aca-reconciler'

@description('Azure region; the ops environment\'s.')
param location string = resourceGroup().location

@description('Resource id of the Container Apps environment to run in (the ops environment).')
param environmentId string

@description('aca-reconciler image, e.g. myregistry.azurecr.io/aca-reconciler:1.0.0.')
param image string

@description('Git URL of the desired-state repository (read by the git-sync sidecar).')
param desiredStateRepo string

@description('Branch of the desired-state repository that the controller applies.')
param desiredStateBranch string = 'main'

@description('Sub-directory of the repository that holds the desired state.')
param desiredStatePath string = 'desired-state'

@description('git-sync image (registry.k8s.io/git-sync/git-sync:v4.x).')
param gitSyncImage string = 'registry.k8s.io/git-sync/git-sync:v4.4.0'

@description('Resource id of a user-assigned identity to run as; empty for a system-assigned one.')
param userAssignedIdentityId string = ''

@description('Resource groups whose apps are managed: [{subscriptionId, resourceGroup}].')
param managedResourceGroups array

@description('Id of the "aca-reconciler apps" custom role (from deploy/permissions.json).')
param appsRoleDefinitionId string

@description('Id of the "aca-reconciler reader" custom role; assign it at subscription scope separately (see docs/operations.md).')
param readerRoleDefinitionId string = ''

@description('Blob URL whose lease elects the leader when more than one replica runs; empty for one replica.')
param leaseBlobUrl string = ''

@description('Replicas: 1, or 2 with leaseBlobUrl for a standby.')
@minValue(1)
@maxValue(2)
param replicas int = 1

@description('Full resync interval (30s, 5m, 1h).')
param interval string = '5m'

@description('CPU cores for the controller (the fleet benchmark: well under 0.25 at 1,000 apps).')
param cpu string = '0.25'

@description('Memory for the controller (the fleet benchmark: under 128 MiB at 1,000 apps).')
param memory string = '0.5Gi'

var userAssigned = !empty(userAssignedIdentityId)
var listenPort = 9090

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: name
  location: location
  identity: userAssigned ? {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${userAssignedIdentityId}': {}
    }
  } : {
    type: 'SystemAssigned'
  }
  properties: {
    environmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      // No ingress: the HTTP endpoints are for the platform's probes only. POST /reconcile
      // from a webhook needs an internal ingress and ACAR_TRIGGER_TOKEN (docs/operations.md).
    }
    template: {
      containers: [
        {
          name: 'aca-reconciler'
          image: image
          args: [ 'run', '--interval', interval ]
          env: concat([
            { name: 'ACAR_DESIRED_STATE', value: '/git/current/${desiredStatePath}' }
            { name: 'ACAR_LISTEN', value: '0.0.0.0:${listenPort}' }
            { name: 'ACAR_LOG_FORMAT', value: 'json' }
          ], empty(leaseBlobUrl) ? [] : [
            { name: 'ACAR_LEASE_BLOB', value: leaseBlobUrl }
          ], userAssigned ? [
            { name: 'AZURE_CLIENT_ID', value: reference(userAssignedIdentityId, '2023-01-31').clientId }
          ] : [])
          resources: { cpu: json(cpu), memory: memory }
          probes: [
            { type: 'Liveness', httpGet: { path: '/healthz', port: listenPort }, periodSeconds: 10 }
            { type: 'Readiness', httpGet: { path: '/readyz', port: listenPort }, periodSeconds: 10, failureThreshold: 30 }
          ]
          volumeMounts: [ { volumeName: 'git', mountPath: '/git' } ]
        }
        {
          name: 'git-sync'
          image: gitSyncImage
          args: [ '--repo=${desiredStateRepo}', '--ref=${desiredStateBranch}', '--root=/git', '--link=current', '--period=30s' ]
          resources: { cpu: json('0.25'), memory: '0.5Gi' }
          volumeMounts: [ { volumeName: 'git', mountPath: '/git' } ]
        }
      ]
      scale: { minReplicas: replicas, maxReplicas: replicas }
      volumes: [ { name: 'git', storageType: 'EmptyDir' } ]
    }
  }
}

var principalId = userAssigned ? reference(userAssignedIdentityId, '2023-01-31').principalId : app.identity.principalId

// The apps role on each managed resource group, and nothing wider.
module appsAssignments 'role-assignment.bicep' = [for (g, i) in managedResourceGroups: {
  name: 'acar-apps-${i}'
  scope: resourceGroup(g.subscriptionId, g.resourceGroup)
  params: {
    principalId: principalId
    roleDefinitionId: appsRoleDefinitionId
  }
}]

output principalId string = principalId
output readerRoleToAssign string = readerRoleDefinitionId
