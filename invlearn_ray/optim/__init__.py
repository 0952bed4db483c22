"""How a step's gradient is taken, reduced across data-parallel workers and applied."""
