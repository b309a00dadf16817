// One role assignment at the scope of the resource group this module is deployed to.
targetScope = 'resourceGroup'

@description('The identity that gets the role.')
param principalId string

@description('Role definition id (a custom role from deploy/permissions.json).')
param roleDefinitionId string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
  }
}
