"""Free-text CCTA reports: de-identification, rule-based spaCy parsing, CAD-RADS labels."""
