"""Command-line tools (absl apps). Library code never imports from here."""
