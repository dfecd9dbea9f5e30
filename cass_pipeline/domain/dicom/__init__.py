"""The hospital's DICOM network: studies in by C-STORE, results back as an SR and a key image."""
