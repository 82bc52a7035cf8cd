"""What the Rollout operators role may do (synced into its group by ``erphub.roles``): see the flags and
change them — stages, percentage, audiences, kill switch, salt, retirement — each change audited. Nothing
else: no flag is added or deleted in the admin (flags come with migrations), and the flag pages show the
flag's own history without the audit log's wider view permission."""

ROLE_PERMISSIONS = {
    "Rollout operators": ["flags.view_flag", "flags.change_flag"],
}
