#!/usr/bin/env sh
# Grant the app's identity "Key Vault Crypto User" on the one key (Azure RBAC permission model).
# Usage: VAULT=erphub-kv KEY=blob-kek PRINCIPAL_ID=<object id of the managed/workload identity> sh role-assignment.sh
set -eu
KEY_ID=$(az keyvault key show --vault-name "$VAULT" --name "$KEY" --query key.kid -o tsv)
VAULT_ID=$(az keyvault show --name "$VAULT" --query id -o tsv)
# Scope: the key itself (not the vault), so the identity can use no other key or secret.
az role assignment create \
  --role "Key Vault Crypto User" \
  --assignee-object-id "$PRINCIPAL_ID" \
  --assignee-principal-type ServicePrincipal \
  --scope "$VAULT_ID/keys/$KEY"
echo "granted on $KEY_ID"
