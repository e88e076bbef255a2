package config

// ValidateBroker checks a --broker URL as the bridge does, for the other
// MQTT clients of the family (the archive) to take theirs alike.
func ValidateBroker(raw string) error { return validateBroker(raw) }
