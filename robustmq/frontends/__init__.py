"""Protocol front-ends. Each speaks one wire protocol and talks to the shared router and log."""
