#!/usr/bin/env sh
# Let the app's service account encrypt and decrypt with the one crypto key, and nothing else.
# Usage: PROJECT=p LOCATION=europe-west1 KEYRING=erphub KEY=blob-kek SA=erphub-app@p.iam.gserviceaccount.com sh iam-binding.sh
set -eu
gcloud kms keys add-iam-policy-binding "$KEY" \
  --project "$PROJECT" --location "$LOCATION" --keyring "$KEYRING" \
  --member "serviceAccount:$SA" \
  --role roles/cloudkms.cryptoKeyEncrypterDecrypter
echo "KMS_KEY_NAME=projects/$PROJECT/locations/$LOCATION/keyRings/$KEYRING/cryptoKeys/$KEY"
