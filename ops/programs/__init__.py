"""Programs the toolkit launches as processes of their own (served by granian), apart
from the library that manages them: the mock payment gateway and the bench service."""
