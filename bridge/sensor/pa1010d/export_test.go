package pa1010d

// OpenHooked is Open with a hook that sees every sentence with a valid
// checksum before it is parsed, so that tests can hold the reader against
// an oracle.
var OpenHooked = open
