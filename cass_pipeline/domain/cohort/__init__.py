"""The raw cohort as the export came: patients, studies, series, reports and their layout."""
