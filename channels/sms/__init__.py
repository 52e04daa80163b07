"""SMS: one module per gateway behind ``SmsGateway``, and ``SmsChannel`` choosing between them."""
