"""What the blob roles may do (synced into groups by ``erphub.roles``).

Owners read and delete their own blobs without any permission: that is object-level, in the selectors.
"""

ROLE_PERMISSIONS = {
    "Blob users": ["blobs.add_blob"],
    "Blob managers": [
        "blobs.add_blob",
        "blobs.view_blob",
        "blobs.view_any_blob",  # read and stream anyone's blob
        "blobs.change_blob",  # transfer ownership in the admin
        "blobs.delete_blob",  # delete anyone's blob
    ],
}
