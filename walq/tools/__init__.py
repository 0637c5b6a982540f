"""Tools that read or mend a store's files from outside the API: verify, dump, repair."""
