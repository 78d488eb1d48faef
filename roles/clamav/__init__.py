"""ClamAV scanning the uploads: new files every minute, all of them daily; quarantine. SOP IN-2."""
