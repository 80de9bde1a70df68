"""The built-in ``wifi`` plugin (issue 12, in progress on this branch): nl80211 so far."""
