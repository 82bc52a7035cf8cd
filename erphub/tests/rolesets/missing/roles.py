ROLE_PERMISSIONS = {"Auditors": ["blobs.fly_blob"]}
