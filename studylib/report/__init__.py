"""From records to the paper: summary, significance, tables, figures, paper."""
