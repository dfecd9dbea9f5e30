"""People in the loop: reviewers settle flagged report labels, readers judge CASS's answers."""
