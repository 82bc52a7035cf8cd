ROLE_PERMISSIONS = {"Wizards": ["blobs.add_blob"]}
