-- trouter store, version 2: the model a label's decision would have served with the
-- anchor lifted (the online router's proposal), recorded before the label was learned, so
-- that the router's test of its base is out of sample.
ALTER TABLE labels ADD COLUMN proposal TEXT;
