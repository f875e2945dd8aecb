"""FDA FSMA 204 (21 CFR Part 1 Subpart S) exports: the electronic sortable spreadsheet of
the Key Data Elements of each Critical Tracking Event, for a traceability lot code, a
product and date range, or a whole recall, as CSV and XLSX. Column names and their sources:
`kdes.COLUMNS` (module docstring of kdes.py); the routes: `fsma204.routes.router`."""
