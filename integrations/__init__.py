"""Publishing presence to Matrix and Microsoft Teams, and importing Microsoft presence."""
