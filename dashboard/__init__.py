"""The prunescope dashboard's logic: store (reading), queries (aggregation), figures (plotly), ui (Streamlit)."""
