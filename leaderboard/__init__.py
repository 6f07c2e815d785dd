"""leaderboard: validate results files and render a static site."""
