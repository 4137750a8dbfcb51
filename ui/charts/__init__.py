"""Chart builders: plain functions DataFrame -> plotly Figure, one module per page."""
