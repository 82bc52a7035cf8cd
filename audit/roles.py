"""What the Auditors role may do (synced into its group by ``erphub.roles``): read, export and verify the
log, and place and release legal holds. Nobody may change or delete events: no such permission is used
anywhere."""

ROLE_PERMISSIONS = {
    "Auditors": [
        "audit.view_auditevent",
        "audit.export_auditevent",
        "audit.view_legalhold",
        "audit.add_legalhold",
        "audit.release_legalhold",
        "audit.view_purgeanchor",
    ],
}
