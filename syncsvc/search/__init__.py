"""Search: by text, vector or row, hybrid ranking, and the text queries filed from SQL."""
