"""Where vectors are written and read: vector tables, generations, search indexes and
promotion of a generation."""
