"""The database: connections and the embedded server, named SQL, identifiers, the catalog of
targets, NOTIFY listening and the search privileges. Imports only ``core``."""
