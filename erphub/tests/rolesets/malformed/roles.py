ROLE_PERMISSIONS = {"Auditors": ["add_blob"]}
