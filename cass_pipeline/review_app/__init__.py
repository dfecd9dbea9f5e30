"""`cass review-app`: the web pages where people review labels and judge CASS's answers."""
