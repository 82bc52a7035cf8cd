"""What the key roles may do (synced into groups by ``erphub.roles``)."""

ROLE_PERMISSIONS = {
    # The key status page and the rotation history (blobs.admin). The rotation commands themselves run from a
    # shell on the server, where the operator's access is the gate.
    "Key administrators": ["kms.view_key_status", "kms.export_data_key"],
}
