"""ModSecurity with the OWASP Core Rule Set in front of the application (Apache). SOP IN-2."""
