"""Model evaluation: systems, generations files, comparison with CIs, tables, the HTML report, MOS studies."""
