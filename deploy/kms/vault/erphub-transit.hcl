# Vault / OpenBao policy for ERP Hub: use one Transit key, nothing else.
# Replace "transit" with VAULT_TRANSIT_MOUNT and "erphub-blobs" with VAULT_TRANSIT_KEY.

# Wrap a new blob's data key (update only: without "create" a missing key is an error, never upserted).
path "transit/encrypt/erphub-blobs" {
  capabilities = ["update"]
}

# Unwrap it on download.
path "transit/decrypt/erphub-blobs" {
  capabilities = ["update"]
}

# blobs_rewrap: move wrapped keys to the latest key version inside Vault.
path "transit/rewrap/erphub-blobs" {
  capabilities = ["update"]
}
